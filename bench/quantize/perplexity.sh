#!/bin/bash
# Perplexity of apus quantize's and llama-quantize's outputs from one F16 SmolLM2, in both engines.
cd /tmp/qz
B=/work/main/vendor/llama.cpp/build/bin; export LD_LIBRARY_PATH=$B
A=/work/main/.build/release/apus
T=/work/shared/goldens/smollm2-135m-instruct-q4_1/perplexity-GPL-3.txt
$A quantize ~/.cache/apus/models/SmolLM2-135M-Instruct.Q4_1.gguf smol-f16.gguf --type F16 --quiet
for t in Q4_K_M Q8_0; do
  $A quantize smol-f16.gguf apus-$t.gguf --type $t --threads 2 --quiet
  $B/llama-quantize smol-f16.gguf llama-$t.gguf $t 2 >/dev/null 2>&1
  cmp -s apus-$t.gguf llama-$t.gguf && echo "$t: apus and llama-quantize outputs byte-identical" || echo "$t: outputs DIFFER"
  for who in apus llama; do
    a=$($A perplexity --model $who-$t.gguf --file $T --ctx 512 --threads 2 2>/dev/null | tail -1)
    l=$($B/llama-perplexity -m $who-$t.gguf -f $T -c 512 -t 2 2>&1 | grep -E "Final estimate")
    echo "$t from $who-quantize: apus perplexity: $a | llama-perplexity: $l"
  done
done
