#!/bin/bash
# llama.cpp's perplexity with each KV cache type (flash attention on, which quantized V needs).
B=/work/main/vendor/llama.cpp/build/bin; export LD_LIBRARY_PATH=$B
T=/work/shared/goldens/smollm2-135m-instruct-q4_1/perplexity-GPL-3.txt
while pgrep -f kv.sh >/dev/null; do sleep 2; done
for m in SmolLM2-135M-Instruct.Q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m; do
  for k in f16 q8_0 q4_0; do
    r=$($B/llama-perplexity -m ~/.cache/apus/models/$m.gguf -f $T -c 512 -t 2 -fa on -ctk $k -ctv $k 2>&1 | grep "Final estimate")
    echo "$m llama.cpp kv $k: $r"
  done
done
