"""Sends the structured-output benchmark's requests to an OpenAI-compatible server.

Usage: python3 drive.py --url http://127.0.0.1:PORT --schema schema.json [--requests 32] [--concurrency 8]
                        [--max-tokens 128] [--cap 40] [--repetitions 3]
Prints one JSON line per mode (plain, schema, schema under --cap): output tokens/s (median over
repetitions, alternating modes), the share of outputs that parse as JSON objects with the
schema's required keys, and mean completion tokens.
"""
import argparse
import concurrent.futures
import json
import statistics
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--schema", required=True)
parser.add_argument("--requests", type=int, default=32)
parser.add_argument("--concurrency", type=int, default=8)
parser.add_argument("--max-tokens", type=int, default=128)
parser.add_argument("--cap", type=int, default=40)
parser.add_argument("--repetitions", type=int, default=3)
parser.add_argument("--temperature", type=float, default=0.7)
args = parser.parse_args()

schema = json.load(open(args.schema))
cities = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Cairo", "Quito", "Perth", "Hanoi", "Denver", "Porto", "Dakar",
          "Seoul", "Bogota", "Kyiv", "Tunis"]


def request(i, mode, seed):
    body = {"messages": [{"role": "user", "content": f"Describe {cities[i % len(cities)]} as JSON."}],
            "max_tokens": args.cap if mode == "schema-cap" else args.max_tokens, "temperature": args.temperature, "seed": seed + i}
    if mode != "plain":
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    req = urllib.request.Request(args.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.load(r)
    text = out["choices"][0]["message"]["content"] or ""
    try:
        value = json.loads(text)
        valid = isinstance(value, dict) and all(k in value for k in schema.get("required", []))
    except ValueError:
        valid = False
    return out["usage"]["completion_tokens"], valid


def run(mode, seed):
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(lambda i: request(i, mode, seed), range(args.requests)))
    seconds = time.time() - start
    return sum(t for t, _ in results) / seconds, sum(v for _, v in results), sum(t for t, _ in results) / len(results)


modes = ["plain", "schema", "schema-cap"]
for mode in modes:  # warm-up: compiles grammars, fills caches
    run(mode, 999)
speeds = {m: [] for m in modes}
valid = {m: 0 for m in modes}
tokens = {m: [] for m in modes}
for r in range(args.repetitions):
    for mode in modes:
        s, v, t = run(mode, r * 1000)
        speeds[mode].append(s)
        valid[mode] += v
        tokens[mode].append(t)
for mode in modes:
    print(json.dumps({"mode": mode, "tokens_per_s": round(statistics.median(speeds[mode]), 1),
                      "runs": [round(x, 1) for x in speeds[mode]],
                      "valid": f"{valid[mode]}/{args.requests * args.repetitions}",
                      "tokens_per_request": round(statistics.mean(tokens[mode]), 1)}))
