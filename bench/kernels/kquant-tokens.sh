#!/usr/bin/env bash
# The AVX2 K-quant kernel for several tokens at each given revision, side by side, one
# thread (kquant-tokens.c): each revision's Sources/KernelsC built with clang -O3, then run in
# turn, twice. GHz converts seconds to cycles (this machine: about 3.1).
# Usage: bench/kernels/kquant-tokens.sh [-f FORMAT] [-g GHZ] REV...
set -euo pipefail
cd "$(dirname "$0")/../.."
format=12 ghz=3.1
while getopts "f:g:" opt; do
    case $opt in
        f) format=$OPTARG ;; g) ghz=$OPTARG ;;
        *) echo "usage: $0 [-f FORMAT] [-g GHZ] REV..." >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for rev in "$@"; do
    for f in $(git ls-tree -r --name-only "$rev" Sources/KernelsC/); do
        mkdir -p "$(dirname "$work/$rev/${f#Sources/KernelsC/}")"
        git show "$rev:$f" > "$work/$rev/${f#Sources/KernelsC/}"
    done
    clang -O3 -march=haswell -I"$work/$rev/include" -I"$work/$rev" bench/kernels/kquant-tokens.c "$work/$rev"/*.c -o "$work/$rev/bench" -lm
done
for round in 1 2; do
    for rev in "$@"; do
        echo "$rev (format $format, round $round)"
        "$work/$rev/bench" "$format" "$ghz"
    done
done
