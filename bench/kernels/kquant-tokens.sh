#!/usr/bin/env bash
# A K-quant kernel for one and several tokens at each given revision, side by side, one
# thread (kquant-tokens.c; -k vnni: the AVX-512 VNNI kernel, else the AVX2 one): each revision's Sources/KernelsC built with clang -O3, then run in
# turn, twice. GHz converts seconds to cycles (3.1 by default; the Zen 5 machines run at about 4.3).
# Usage: bench/kernels/kquant-tokens.sh [-f FORMAT] [-g GHZ] [-k avx2|vnni] [-c COLS] REV...
set -euo pipefail
cd "$(dirname "$0")/../.."
format=12 ghz=3.1 kernel=avx2 cols=1536
while getopts "f:g:k:c:" opt; do
    case $opt in
        f) format=$OPTARG ;; g) ghz=$OPTARG ;; k) kernel=$OPTARG ;; c) cols=$OPTARG ;;
        *) echo "usage: $0 [-f FORMAT] [-g GHZ] [-k avx2|vnni] [-c COLS] REV..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for rev in "$@"; do bench/kernels/build-at.sh "$rev" bench/kernels/kquant-tokens.c "$work" > /dev/null; done
for round in 1 2; do
    for rev in "$@"; do
        echo "$rev (format $format, $kernel, round $round)"
        "$work/$rev/bench" "$format" "$ghz" "$kernel" "$cols"
    done
done
