#!/bin/bash
# Quantized KV caches with keys fitted at load (KeyTransform): perplexity on the goldens' GPL-3 text
# (ctx 512, 2 threads) for every model and cache type, Q4_0 again with AVX2 kernels; the load time
# the fit adds (`apus run` of one token, f16 against q4_0, median of 3); engine throughput at 16
# concurrent requests per type (SmolLM2, 48 MiB of KV).
A=${APUS:-.build/release/apus}
T=${TEXT:-../shared/goldens/smollm2-135m-instruct-q4_1/perplexity-GPL-3.txt}
models=${MODELS:-"smollm2-135m qwen2.5-coder-0.5b gemma-3-270m qwen2.5-coder-1.5b"}
types=("f16 f16" "q8_0 q8_0" "q4_0 q4_0" "q8_0 q4_0" "kivi4 q4_0")
for m in $models; do
  for t in "${types[@]}"; do
    set -- $t
    s=$(date +%s); r=$($A perplexity --model $m --file $T --ctx 512 --threads 2 --kv-type-k $1 --kv-type-v $2 2>&1 | tail -1); e=$(date +%s)
    echo "$m keys $1 values $2: $r ($((e-s)) s)"
  done
  echo "$m keys q4_0 values q4_0, --kernels avx2: $($A perplexity --kernels avx2 --model $m --file $T --ctx 512 --threads 2 --kv-type q4_0 2>&1 | tail -1)"
done
for m in $models; do
  for t in f16 q4_0; do
    times=$(for i in 1 2 3; do /usr/bin/time -f %e $A run --model $m --max-tokens 1 --temperature 0 --threads 2 --kv-type $t "Hello" 2>&1 >/dev/null | tail -1; done | sort -n | tr '\n' ' ')
    echo "$m load and one token, kv $t: $times s (median the middle one)"
  done
done
for t in "${types[@]}"; do
  set -- $t
  echo "kv-memory 48 keys $1 values $2: $($A bench throughput --model smollm2-135m --requests 64 --concurrency 16 --prompt-tokens 128 \
    --max-tokens 128 --threads 2 --kv-type-k $1 --kv-type-v $2 --kv-memory 48 --json 2>/dev/null | tail -1)"
done
