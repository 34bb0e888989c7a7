#!/usr/bin/env bash
# Runs llama.cpp's llama-bench and `apus bench` on the same model, one after the other in
# one invocation, and prints both tables and Apus's speed as a ratio of llama.cpp's.
# Usage: scripts/bench-vs-llama.sh [-m MODEL] [-p 512] [-n 128] [-t 1,2] [-r 5] [-k avx2]
# -k avx2: both limited to AVX2 on an AVX-512 machine (llama.cpp built without AVX-512 by
# `scripts/build-llama-cpp.sh avx2`, Apus with `--kernels avx2`).
set -euo pipefail
cd "$(dirname "$0")/.."
model="" prompt=512 gen=128 threads=1,2 reps=5 kernels=""
while getopts "m:p:n:t:r:k:" opt; do
    case $opt in
        m) model=$OPTARG ;; p) prompt=$OPTARG ;; n) gen=$OPTARG ;; t) threads=$OPTARG ;; r) reps=$OPTARG ;; k) kernels=$OPTARG ;;
        *) echo "usage: $0 [-m MODEL] [-p N] [-n N] [-t T,T] [-r R] [-k avx2]" >&2; exit 2 ;;
    esac
done
case $kernels in "" | avx2) ;; *) echo "-k takes avx2 only" >&2; exit 2 ;; esac
bin=$(bash scripts/build-llama-cpp.sh $kernels)
swift build -c release --product apus -Xswiftc -enable-testing >&2  # the flags of the test build, so that neither rebuilds the other
apus=.build/release/apus
[ -n "$model" ] || model=$("$apus" pull)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin/llama-bench" -m "$model" -p "$prompt" -n "$gen" -t "$threads" -r "$reps" -o json > "$out/llama.json"
# --bandwidth: a plain streaming read before each decode repetition, and its median share, beside the decode bandwidth.
"$apus" bench --model "$model" -p "$prompt" -n "$gen" -t "$threads" -r "$reps" ${kernels:+--kernels $kernels} --json --bandwidth > "$out/apus.json"
python3 - "$out/llama.json" "$out/apus.json" <<'PY'
import json, sys
llama = json.load(open(sys.argv[1]))
apus = json.load(open(sys.argv[2]))
def key(r): return (r["n_threads"], r["n_prompt"], r["n_gen"])
ref = {key(r): r for r in llama}
print("| threads | test | llama.cpp t/s | Apus t/s | Apus / llama.cpp | Apus weights GB/s (median share of a read beside each run) |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for r in apus:
    l = ref.get(key(r))
    if not l: continue
    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    gbps = f"{r['weights_gbps']:.1f}" if r.get("weights_gbps") else ""
    if r.get("weights_share_of_read"):
        gbps += f" ({100 * r['weights_share_of_read']:.0f}% of {r['streaming_read_gbps']:.1f})"
    print(f"| {r['n_threads']} | {test} | {l['avg_ts']:.2f} ± {l['stddev_ts']:.2f} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} | {r['avg_ts'] / l['avg_ts']:.2f}× | {gbps} |")
PY
