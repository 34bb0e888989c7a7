#!/bin/bash
# kivi4 keys (per channel over 16-position blocks, KIVI) beside the other KV types: perplexity on the goldens'
# GPL-3 text (ctx 512, 2 threads), then engine throughput at 16 concurrent requests (SmolLM2, 48 MiB of KV:
# f16 holds about half the batch).
A=${APUS:-.build/release/apus}
T=${TEXT:-../shared/goldens/smollm2-135m-instruct-q4_1/perplexity-GPL-3.txt}
types=("f16 f16" "q8_0 q8_0" "q4_0 q4_0" "kivi4 q4_0" "kivi4 q8_0")
for m in smollm2-135m qwen2.5-coder-0.5b; do
  for t in "${types[@]}"; do
    set -- $t
    s=$(date +%s); r=$($A perplexity --model $m --file $T --ctx 512 --threads 2 --kv-type-k $1 --kv-type-v $2 2>&1 | tail -1); e=$(date +%s)
    echo "$m keys $1 values $2: $r ($((e-s)) s)"
  done
done
for t in "f16 f16" "kivi4 q4_0"; do
  set -- $t
  s=$(date +%s); r=$($A perplexity --model gemma-3-270m --file $T --ctx 512 --threads 2 --kv-type-k $1 --kv-type-v $2 2>&1 | tail -1); e=$(date +%s)
  echo "gemma-3-270m keys $1 values $2: $r ($((e-s)) s)"
done
for t in "${types[@]}"; do
  set -- $t
  echo "kv-memory 48 keys $1 values $2: $($A bench throughput --model smollm2-135m --requests 64 --concurrency 16 --prompt-tokens 128 \
    --max-tokens 128 --threads 2 --kv-type-k $1 --kv-type-v $2 --kv-memory 48 --json 2>/dev/null | tail -1)"
done
