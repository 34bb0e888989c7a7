#!/bin/bash
# Perplexity (goldens GPL-3 text, ctx 512, 2 threads) with each KV cache type, rotation on and off.
# "off" needs a build whose KVCacheFormat.isRotated reads APUS_KV_NO_ROTATE (the measurement build of 2026-12-05; main has no switch).
A=${APUS:-.build/release/apus}
T=${TEXT:-../shared/goldens/smollm2-135m-instruct-q4_1/perplexity-GPL-3.txt}
for m in smollm2-135m qwen2.5-coder-0.5b; do
  for k in f16 q8_0 q4_0; do
    for rot in on off; do
      [ $k = f16 ] && [ $rot = off ] && continue
      if [ $rot = off ]; then export APUS_KV_NO_ROTATE=1; else unset APUS_KV_NO_ROTATE; fi
      s=$(date +%s); r=$($A perplexity --model $m --file $T --ctx 512 --threads 2 --kv-type $k 2>&1 | tail -1); e=$(date +%s)
      echo "$m kv $k rotation $rot: $r ($((e-s)) s)"
    done
  done
done
