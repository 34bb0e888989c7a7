#!/usr/bin/env bash
# The serving engine's throughput next to llama.cpp's single-stream decode, in one
# invocation: llama-bench tg128, then `apus bench throughput` (16 concurrent requests of 128
# output tokens) with long and short prompts, and the ratios.
# Usage: scripts/bench-throughput-vs-llama.sh [-m MODEL] [-t THREADS] [-r REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
model="" threads=2 reps=5
while getopts "m:t:r:" opt; do
    case $opt in
        m) model=$OPTARG ;; t) threads=$OPTARG ;; r) reps=$OPTARG ;;
        *) echo "usage: $0 [-m MODEL] [-t THREADS] [-r REPS]" >&2; exit 2 ;;
    esac
done
bin=$(bash scripts/build-llama-cpp.sh)
swift build -c release --product apus >&2
apus=.build/release/apus
[ -n "$model" ] || model=$("$apus" pull)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bin/llama-bench" -m "$model" -p 0 -n 128 -t "$threads" -r "$reps" -o json > "$out/llama.json"
for p in 128 16; do
    "$apus" bench throughput --model "$model" --threads "$threads" --requests 64 --concurrency 16 \
        --prompt-tokens "$p" --max-tokens 128 --json > "$out/apus-$p.json"
done
python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
tg = json.load(open(os.path.join(d, "llama.json")))[0]["avg_ts"]
print(f"llama.cpp tg128, {json.load(open(os.path.join(d, 'llama.json')))[0]['n_threads']} threads: {tg:.1f} tokens/s (single stream)")
print()
print("| prompt tokens | Apus output tok/s (16 concurrent) | × llama.cpp tg128 | req/s | TTFT p50 ms | ITL p50 ms |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for p in (128, 16):
    r = json.load(open(os.path.join(d, f"apus-{p}.json")))
    print(f"| {p} | {r['output_tokens_per_s']:.1f} | {r['output_tokens_per_s'] / tg:.2f}× | {r['requests_per_s']:.2f} | {r['ttft_ms']['p50']:.0f} | {r['itl_ms']['p50']:.1f} |")
PY
