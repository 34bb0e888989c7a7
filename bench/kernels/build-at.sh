#!/usr/bin/env bash
# Builds a benchmark program against one revision's Sources/KernelsC with clang -O3, for the
# side-by-side scripts here. Usage: bench/kernels/build-at.sh REV PROGRAM.c WORKDIR (prints
# the binary's path).
set -euo pipefail
rev=$1 program=$2 work=$3
for f in $(git ls-tree -r --name-only "$rev" Sources/KernelsC/); do
    mkdir -p "$(dirname "$work/$rev/${f#Sources/KernelsC/}")"
    git show "$rev:$f" > "$work/$rev/${f#Sources/KernelsC/}"
done
clang -O3 -march=haswell -I"$work/$rev/include" -I"$work/$rev" "$program" "$work/$rev"/*.c -o "$work/$rev/bench" -lm -lpthread
echo "$work/$rev/bench"
