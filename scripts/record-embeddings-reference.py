#!/usr/bin/env python3
"""Records llama-server's embeddings of a few texts (SmolLM2-135M-Instruct Q4_1, --embeddings --pooling mean) into
Tests/ServerTests/embeddings_reference.json, which openai_client_test.py compares Apus's /v1/embeddings with.

Usage: python3 scripts/record-embeddings-reference.py   (builds llama.cpp first with scripts/build-llama-cpp.sh)
"""
import json
import os
import subprocess
import time
import urllib.request

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUTS = ["The capital of France is", "A cat sat on the mat.", "Embeddings map texts to vectors, so that texts that mean the same are close."]
bin_dir = subprocess.check_output(["bash", os.path.join(root, "scripts/build-llama-cpp.sh")], text=True).strip().splitlines()[-1]
model = os.path.join(os.environ.get("APUS_HOME", os.path.expanduser("~/.cache/apus")), "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
port = 8097
server = subprocess.Popen([os.path.join(root, bin_dir, "llama-server"), "-m", model, "--embeddings", "--pooling", "mean", "-t", "2",
                           "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health").status == 200:
                break
        except OSError:
            time.sleep(0.2)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=json.dumps({"input": INPUTS}).encode(),
                                     headers={"Content-Type": "application/json"})
    data = json.load(urllib.request.urlopen(request))["data"]
finally:
    server.terminate()
    server.wait()
reference = {
    "source": "llama-server from llama-cpp-python 0.3.36's llama.cpp, -m SmolLM2-135M-Instruct.Q4_1.gguf --embeddings --pooling mean -t 2; "
              "POST /v1/embeddings (L2-normalised); recorded by scripts/record-embeddings-reference.py",
    "inputs": INPUTS,
    "embeddings": [[round(x, 7) for x in d["embedding"]] for d in sorted(data, key=lambda d: d["index"])],
}
with open(os.path.join(root, "Tests/ServerTests/embeddings_reference.json"), "w") as f:
    json.dump(reference, f)
    f.write("\n")
print(f"{len(INPUTS)} embeddings of {len(reference['embeddings'][0])} dimensions recorded")
