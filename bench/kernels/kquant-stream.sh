#!/usr/bin/env bash
# The one-token VNNI kernel of a K-quant streamed from memory against a plain read, at each
# given revision, in turn and twice (kquant-stream.c; each revision's Sources/KernelsC built
# with clang -O3).
# Usage: bench/kernels/kquant-stream.sh [-f FORMAT] [-t THREADS] [-s COLSxROWS] REV...
set -euo pipefail
cd "$(dirname "$0")/../.."
format=12 threads=1 shape=1536x8960
while getopts "f:t:s:" opt; do
    case $opt in
        f) format=$OPTARG ;; t) threads=$OPTARG ;; s) shape=$OPTARG ;;
        *) echo "usage: $0 [-f FORMAT] [-t THREADS] [-s COLSxROWS] REV..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for rev in "$@"; do bench/kernels/build-at.sh "$rev" bench/kernels/kquant-stream.c "$work" > /dev/null; done
for round in 1 2; do
    for rev in "$@"; do
        echo "$rev (round $round)"
        "$work/$rev/bench" "$format" "$threads" "${shape%x*}" "${shape#*x}" | tail -1
    done
done
