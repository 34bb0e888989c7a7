#!/bin/bash
# Engine throughput at 16 concurrent requests (64 requests, 128-token prompts, 128 tokens out, 2 threads) with each
# KV cache type: at the default --kv-memory (everything fits) and at 48 MiB (f16 holds about half the batch).
A=${APUS:-.build/release/apus}
for mem in 512 48; do
  for k in f16 q8_0 q4_0; do
    echo "kv-memory $mem kv $k: $($A bench throughput --model ${MODEL:-smollm2-135m} --requests 64 --concurrency 16 --prompt-tokens 128 \
      --max-tokens 128 --threads 2 --kv-type $k --kv-memory $mem --json 2>/dev/null | tail -1)"
  done
done
