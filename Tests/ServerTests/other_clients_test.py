"""The clients people point at a local server, each as its documentation configures it, against a live `apus serve`
on SmolLM2 (started by OpenAIClientTests.swift): langchain-openai's ChatOpenAI with its default model name, litellm
with an `openai/` model, and Simon Willison's `llm` CLI with an extra OpenAI-compatible model.

Usage: python3 other_clients_test.py --base-url http://127.0.0.1:PORT --api-key KEY --model NAME
Exits non-zero, naming the check, at the first failure.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import openai

parser = argparse.ArgumentParser()
parser.add_argument("--base-url", required=True)
parser.add_argument("--api-key", required=True)
parser.add_argument("--model", required=True)
args = parser.parse_args()
checks = 0


def check(condition, what):
    global checks
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


client = openai.OpenAI(base_url=args.base_url + "/v1", api_key=args.api_key, max_retries=0)
question = [{"role": "user", "content": "What is the capital of France?"}]
expected = client.chat.completions.create(model=args.model, messages=question, temperature=0, max_tokens=12).choices[0].message.content
check(expected, "a reference reply")

# langchain-openai: ChatOpenAI() names gpt-3.5-turbo unless told otherwise; the one model serves it.
from langchain_openai import ChatOpenAI  # noqa: E402

llm_chain = ChatOpenAI(base_url=args.base_url + "/v1", api_key=args.api_key, temperature=0, max_tokens=12, max_retries=0)
reply = llm_chain.invoke("What is the capital of France?")
check(reply.content == expected, f"ChatOpenAI with its default model {llm_chain.model_name}: {reply.content!r} vs {expected!r}")
streamed = "".join(chunk.content for chunk in llm_chain.stream("What is the capital of France?"))
check(streamed == expected, f"ChatOpenAI streams the same: {streamed!r}")

# litellm: `openai/<anything>` with api_base, as its docs say for OpenAI-compatible servers (its price list from
# the package, not fetched).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm  # noqa: E402

response = litellm.completion(model="openai/my-model", api_base=args.base_url + "/v1", api_key=args.api_key, messages=question,
                              temperature=0, max_tokens=12)
check(response.choices[0].message.content == expected, f"litellm openai/my-model: {response.choices[0].message.content!r}")
pieces = litellm.completion(model="openai/my-model", api_base=args.base_url + "/v1", api_key=args.api_key, messages=question,
                            temperature=0, max_tokens=12, stream=True)
check("".join(p.choices[0].delta.content or "" for p in pieces) == expected, "litellm streams the same")
vectors = litellm.embedding(model="openai/my-embedder", api_base=args.base_url + "/v1", api_key=args.api_key, input=["hello"])
check(len(vectors.data[0]["embedding"]) == 576, "litellm embeddings")

# llm: an extra OpenAI-compatible model in extra-openai-models.yaml, its documented way to a local server.
home = tempfile.mkdtemp(prefix="apus-llm-")
with open(os.path.join(home, "extra-openai-models.yaml"), "w") as f:
    f.write(f"- model_id: apus\n  model_name: {args.model}\n  api_base: {args.base_url}/v1\n  api_key_name: apus\n")
with open(os.path.join(home, "keys.json"), "w") as f:
    json.dump({"apus": args.api_key}, f)
env = {**os.environ, "LLM_USER_PATH": home}
run = subprocess.run([sys.executable, "-m", "llm", "-m", "apus", "-o", "temperature", "0", "-o", "max_tokens", "12", "--no-stream",
                      "What is the capital of France?"], env=env, capture_output=True, text=True, timeout=120)
check(run.returncode == 0, f"llm exits 0: {run.stderr}")
check(run.stdout.strip() == expected.strip(), f"llm prints the reply: {run.stdout!r} vs {expected!r}")

print(f"other_clients_test: {checks} checks passed")
