#!/usr/bin/env bash
# Serving benchmark with an established client: guidellm (the vLLM project's benchmark
# client, 0.8.1, in its own virtual environment) drives `apus serve` and then llama.cpp's
# llama-server (same model, -np 16 -c 16384 -t 2), each with freshly generated prompts of about
# 128 tokens: concurrent profile, 16 streams, 64 requests, 128 output tokens with ignore_eos.
# Prints output tokens/s, requests/s, TTFT and ITL p50/p99 for both and the ratios, and keeps
# guidellm's JSON under bench/. Not part of CI: guidellm pulls in torch (about 6 GB).
# Usage: scripts/bench-serving-vs-llama.sh [-m MODEL] [-t THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
model="" threads=2
while getopts "m:t:" opt; do
    case $opt in
        m) model=$OPTARG ;; t) threads=$OPTARG ;;
        *) echo "usage: $0 [-m MODEL] [-t THREADS]" >&2; exit 2 ;;
    esac
done
bin=$(bash scripts/build-llama-cpp.sh)
swift build -c release --product apus >&2
apus=.build/release/apus
[ -n "$model" ] || model=$("$apus" pull)
venv=.venv-guidellm
if [ ! -x "$venv/bin/guidellm" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet guidellm==0.8.1
fi
day=$(date +%Y-%m-%d)
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

# 64 prompts of about 128 tokens of random English words, different on every call, so that
# neither server's prefix cache has seen them.
prompts() {
    python3 - "$1" <<'PY'
import json, random, sys
words = ("time year people way day man thing woman life child world school state family student group country problem hand part "
         "place case week company system program question work government number night point home water room mother area money "
         "story fact month lot right study book eye job word business issue side kind head house service friend father power hour "
         "game line end member law car city community name president team minute idea kid body information back parent face others "
         "level office door health person art war history party result change morning reason research girl guy moment air teacher "
         "force education river mountain garden window market letter music table").split()
rng = random.Random()
rows = [{"prompt": " ".join(rng.choice(words) for _ in range(120)), "output_tokens_count": 128} for _ in range(64)]
json.dump(rows, open(sys.argv[1], "w"))
PY
}

wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "server on port $1 did not become ready" >&2
    return 1
}

run_guidellm() {  # port, output json
    "$venv/bin/guidellm" run \
        --backend "kind=openai_http,target=http://127.0.0.1:$1,request_format=/v1/completions" \
        --profile kind=concurrent,streams=16 --constraint kind=max_requests,count=64 \
        --data "kind=json_file,path=$out/prompts-$1.json" --output "kind=json,path=$2" \
        --disable-console-interactive >&2
}

mkdir -p bench
prompts "$out/prompts-8391.json"
"$apus" serve --model "$model" --threads "$threads" --port 8391 2>"$out/apus.log" &
apus_pid=$!
wait_ready 8391
echo "prompt tokens per request (apus tokenizer):" \
    "$(python3 -c "import json; print(json.load(open('$out/prompts-8391.json'))[0]['prompt'])" | "$apus" tokenize --model "$model" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" >&2
run_guidellm 8391 "bench/$day-guidellm-apus.json"
kill -INT $apus_pid; wait $apus_pid || true

prompts "$out/prompts-8392.json"
"$bin/llama-server" -m "$model" -np 16 -c 16384 -t "$threads" --port 8392 >"$out/llama.log" 2>&1 &
llama_pid=$!
wait_ready 8392
run_guidellm 8392 "bench/$day-guidellm-llama-server.json"
kill $llama_pid; wait $llama_pid || true

python3 - "bench/$day-guidellm-apus.json" "bench/$day-guidellm-llama-server.json" <<'PY'
import json, sys

def summary(path):
    b = json.load(open(path))["benchmarks"][0]["metrics"]
    def stat(name, key):
        s = b[name]["successful"]
        return s[key] if key in s else s["percentiles"][key]
    return {
        "output tok/s": stat("output_tokens_per_second", "mean"),
        "req/s": stat("requests_per_second", "mean"),
        "TTFT p50 ms": stat("time_to_first_token_ms", "p50"),
        "TTFT p99 ms": stat("time_to_first_token_ms", "p99"),
        "ITL p50 ms": stat("inter_token_latency_ms", "p50"),
        "ITL p99 ms": stat("inter_token_latency_ms", "p99"),
    }

apus, llama = summary(sys.argv[1]), summary(sys.argv[2])
print("| metric | llama-server | Apus | Apus / llama-server |")
print("| --- | ---: | ---: | ---: |")
for k in apus:
    print(f"| {k} | {llama[k]:.1f} | {apus[k]:.1f} | {apus[k] / llama[k]:.2f}× |")
PY
