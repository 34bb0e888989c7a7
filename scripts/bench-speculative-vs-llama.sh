#!/usr/bin/env bash
# Speculative decoding side by side: llama.cpp's llama-server (plain, --spec-type ngram-simple
# with its defaults and with drafts of at most 16, and the draft model with --spec-type
# draft-simple -md, up to 8 drafted) and then `apus bench speculative` (plain,
# ngram, draft), on the same prompts (bench/speculative/*.txt as one chat message each), 256
# greedy tokens with end-of-generation ignored, same threads. Prints llama-server's decode
# tok/s (timings.predicted_per_second, median of the repetitions) with draft_n and
# draft_n_accepted, then Apus's table.
# Usage: scripts/bench-speculative-vs-llama.sh [-m MODEL] [-d DRAFT] [-t THREADS] [-r REPETITIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
model=qwen2.5-coder-1.5b draft=qwen2.5-coder-0.5b threads=2 reps=3
while getopts "m:d:t:r:" opt; do
    case $opt in
        m) model=$OPTARG ;; d) draft=$OPTARG ;; t) threads=$OPTARG ;; r) reps=$OPTARG ;;
        *) echo "usage: $0 [-m MODEL] [-d DRAFT] [-t THREADS] [-r REPETITIONS]" >&2; exit 2 ;;
    esac
done
bin=$(bash scripts/build-llama-cpp.sh)
swift build -c release --product apus -Xswiftc -enable-testing >&2  # the flags of the test build, so that neither rebuilds the other
apus=.build/release/apus
model_path=$("$apus" pull "$model")
draft_path=$("$apus" pull "$draft")
port=8391
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
        sleep 0.2
    done
    echo "llama-server did not become ready" >&2
    return 1
}

echo "llama-server ($model, $threads threads, 256 greedy tokens, median of $reps)"
echo "| prompt | mode | tok/s | × plain | drafted | accepted |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
declare -A plain
for mode in plain ngram-simple ngram-simple-m16 draft; do
    case $mode in
        plain) extra=() ;;
        ngram-simple) extra=(--spec-type ngram-simple) ;;
        ngram-simple-m16) extra=(--spec-type ngram-simple --spec-ngram-simple-size-m 16) ;;
        draft) extra=(--spec-type draft-simple -md "$draft_path" --spec-draft-n-max 8 -td "$threads") ;;
    esac
    "$bin/llama-server" -m "$model_path" -t "$threads" -c 8192 -np 1 --port "$port" "${extra[@]}" >/dev/null 2>&1 &
    server=$!
    wait_ready
    for file in bench/speculative/*.txt; do
        name=$(basename "$file" .txt)
        body=$(python3 -c 'import json,sys; print(json.dumps({"messages": [{"role": "user", "content": open(sys.argv[1]).read()}], "max_tokens": 256, "temperature": 0, "ignore_eos": True}))' "$file")
        results=()
        for _ in $(seq 1 "$reps"); do
            results+=("$(curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' -d "$body" \
                | python3 -c 'import json,sys; t=json.load(sys.stdin)["timings"]; print(t["predicted_per_second"], t.get("draft_n", 0), t.get("draft_n_accepted", 0))')")
        done
        row=$(printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (reps + 1) / 2 ))p")
        read -r speed drafted accepted <<<"$row"
        [ "$mode" = plain ] && plain[$name]=$speed
        printf '| %s | %s | %.1f | %.2f | %s | %s |\n' "$name" "$mode" "$speed" "$(python3 -c "print($speed / ${plain[$name]})")" "$drafted" "$accepted"
    done
    kill "$server"
    wait "$server" 2>/dev/null || true
done
echo
"$apus" bench speculative --model "$model_path" --draft-model "$draft_path" --threads "$threads" -r "$reps"
