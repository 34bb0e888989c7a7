#!/usr/bin/env bash
# A K-quant kernel for one and several tokens at each given revision, side by side, one
# thread (kquant-tokens.c; -k vnni: the AVX-512 VNNI kernel, else the AVX2 one): each revision's Sources/KernelsC built with clang -O3, then run in
# turn, twice. GHz converts seconds to cycles (this machine: about 3.1).
# Usage: bench/kernels/kquant-tokens.sh [-f FORMAT] [-g GHZ] [-k avx2|vnni] REV...
set -euo pipefail
cd "$(dirname "$0")/../.."
format=12 ghz=3.1 kernel=avx2
while getopts "f:g:k:" opt; do
    case $opt in
        f) format=$OPTARG ;; g) ghz=$OPTARG ;; k) kernel=$OPTARG ;;
        *) echo "usage: $0 [-f FORMAT] [-g GHZ] [-k avx2|vnni] REV..." >&2; exit 2 ;;
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
        echo "$rev (format $format, $kernel, round $round)"
        "$work/$rev/bench" "$format" "$ghz" "$kernel"
    done
done
