#!/usr/bin/env bash
# Structured output side by side: llama.cpp's llama-server (8 slots, --jinja) and `apus serve`
# in turn, each sent the same 32 chat requests ("Describe <city> as JSON."), 8 at a time,
# unconstrained, with response_format json_schema (bench/structured/schema.json) and max_tokens
# 128, and with the schema under max_tokens 40 (bench/structured/drive.py). Prints output tok/s
# (median of the repetitions, modes alternating), how many outputs parse with the schema's
# required keys, and tokens per request.
# Usage: scripts/bench-structured-vs-llama.sh [-m MODEL] [-t THREADS] [-r REPETITIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=qwen2.5-coder-0.5b threads=2 reps=3
while getopts "m:t:r:" opt; do
    case $opt in
        m) model=$OPTARG ;; t) threads=$OPTARG ;; r) reps=$OPTARG ;;
        *) echo "usage: $0 [-m MODEL] [-t THREADS] [-r REPETITIONS]" >&2; exit 2 ;;
    esac
done
bin=$(bash scripts/build-llama-cpp.sh)
swift build -c release --product apus -Xswiftc -enable-testing >&2
apus=.build/release/apus
model_path=$("$apus" pull "$model")
port=8392
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "the server did not become ready" >&2
    return 1
}

drive() { python3 bench/structured/drive.py --url "http://127.0.0.1:$port" --schema bench/structured/schema.json --repetitions "$reps"; }

echo "llama-server ($model, $threads threads, 8 slots)"
"$bin/llama-server" -m "$model_path" -t "$threads" -c 8192 -np 8 --jinja --port "$port" >/dev/null 2>&1 &
server=$!
wait_ready
drive
kill "$server"; wait "$server" 2>/dev/null || true

echo "apus serve ($model, $threads threads)"
"$apus" serve --model "$model_path" --threads "$threads" --port "$port" >/dev/null 2>&1 &
server=$!
wait_ready
drive
kill "$server"; wait "$server" 2>/dev/null || true
