#!/bin/bash
# Perplexity (goldens' GPL-3 text, ctx 512, 2 threads) with each KV cache type.
A=/work/main/.build/release/apus
T=/work/shared/goldens/smollm2-135m-instruct-q4_1/perplexity-GPL-3.txt
for m in smollm2-135m qwen2.5-coder-0.5b; do
  for k in f16 q8_0 q4_0; do
    s=$(date +%s); r=$($A perplexity --model $m --file $T --ctx 512 --threads 2 --kv-type $k 2>&1 | tail -1); e=$(date +%s)
    echo "$m kv $k: $r ($((e-s)) s)"
  done
done
