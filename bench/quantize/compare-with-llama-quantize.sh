#!/bin/bash
# For each model: an F16 copy by apus, then every type by both tools; cmp the outputs.
cd /tmp/qz
B=/work/main/vendor/llama.cpp/build/bin; export LD_LIBRARY_PATH=$B
A=/work/main/.build/release/apus
for m in SmolLM2-135M-Instruct.Q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m gemma-3-270m-q4_k_m qwen2.5-coder-1.5b-instruct-q4_k_m; do
  $A quantize ~/.cache/apus/models/$m.gguf $m-f16.gguf --type F16 --quiet
  for t in Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K_M Q5_K_M Q6_K; do
    s1=$(date +%s.%N); $A quantize $m-f16.gguf a.gguf --type $t --threads 2 --quiet >/dev/null 2>&1; s2=$(date +%s.%N)
    $B/llama-quantize $m-f16.gguf l.gguf $t 2 >/dev/null 2>&1; s3=$(date +%s.%N)
    if cmp -s a.gguf l.gguf; then r=identical; else r="DIFFER $(cmp a.gguf l.gguf | head -1)"; fi
    printf "%-40s %-7s apus %6.1fs llama-quantize %6.1fs %s\n" $m $t $(echo "$s2-$s1" | bc) $(echo "$s3-$s2" | bc) "$r"
  done
  rm -f $m-f16.gguf
done
