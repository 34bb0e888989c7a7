#!/usr/bin/env python3
"""Cache-aware routing against round-robin over two `apus serve` replicas, and one replica
alone, on one workload: 32 clients sharing 4 system prompts of about 1,000 tokens, each
client asking its questions one after another (streamed, greedy, 16 tokens each).

Each replica is pinned to its own core (taskset) with one thread and a KV cache that holds
less than three of the system prompts, so a replica that sees all four evicts them (the
regime routing exists for: more prefixes than one cache holds). The single replica has the
pair's KV memory (all four fit) and one core. Prints a Markdown
table: prefix hit rate (the replicas' own counters, through the router's /metrics), median
and p90 time to first token, requests and generated tokens per second.

    python3 bench/router/run.py [--apus .build/release/apus] [--requests-per-client 2]
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from servers import Processes, get, metric, wait_ready  # noqa: E402

TOPICS = ["a hospital's pharmacy", "a railway signalling team", "a public library", "a bakery chain"]


def system_prompt(i):
    """About 1,000 tokens of instructions, different for each of the four from the first word."""
    topic = TOPICS[i]
    rules = [f"Rule {n} for {topic}: answer in one short sentence, name the document you rely on "
             f"(section {n}.{i}), never invent a number, and say when the records of {topic} are silent."
             for n in range(1, 21)]
    return f"You are the assistant of {topic}. " + " ".join(rules)


def stream(url, body):
    """Time to the first generated token, and tokens received."""
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.time()
    first, tokens = None, 0
    with urllib.request.urlopen(request, timeout=600) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                tokens += 1
                first = first or time.time() - start
    return first or time.time() - start, tokens


def load(url, clients, per_client):
    ttfts, tokens, errors = [], [0], []
    lock = threading.Lock()

    def client(c):
        for q in range(per_client):
            body = {"model": "smollm2-135m", "max_tokens": 16, "temperature": 0, "stream": True,
                    "messages": [{"role": "system", "content": system_prompt(c % 4)},
                                 {"role": "user", "content": f"Client {c}, question {q}: what should I check first?"}]}
            try:
                ttft, n = stream(url, body)
                with lock:
                    ttfts.append(ttft)
                    tokens[0] += n
            except Exception as e:
                with lock:
                    errors.append(str(e))

    start = time.time()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ttfts, tokens[0], time.time() - start, errors


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--apus", default=".build/release/apus")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--kv-memory", type=int, default=96, help="MiB of KV cache per replica")
    args = parser.parse_args()
    processes = Processes()
    start, stop_all = processes.start, processes.stop_all

    def replicas(n, kv_memory):
        urls = []
        for i in range(n):
            port = 8101 + i
            start([args.apus, "serve", "--model", "smollm2-135m", "--port", str(port), "--threads", "1",
                   "--kv-memory", str(kv_memory)], core=i)
            urls.append(f"http://127.0.0.1:{port}")
        for u in urls:
            wait_ready(u)
        return urls

    rows = []
    try:
        for policy in ["cache-aware", "round-robin"]:
            urls = replicas(2, args.kv_memory)
            start([args.apus, "router", "--port", "8100", "--policy", policy] + sum([["--replica", u] for u in urls], []))
            wait_ready("http://127.0.0.1:8100")
            ttfts, tokens, seconds, errors = load("http://127.0.0.1:8100", args.clients, args.requests_per_client)
            time.sleep(1.5)  # one more health check reads the replicas' counters
            m = get("http://127.0.0.1:8100/metrics")
            rows.append((f"router, 2 replicas, {policy}", metric(m, "apus_router_prefix_hit_ratio_observed"),
                         metric(m, "apus_router_prefix_hit_ratio_predicted"), ttfts, tokens, seconds, errors))
            stop_all()
            print(f"{rows[-1][0]}: {rows[-1][5]:.1f} s, {len(rows[-1][6])} errors", file=sys.stderr, flush=True)
        # The same KV memory as the pair, on one core.
        urls = replicas(1, 2 * args.kv_memory)
        ttfts, tokens, seconds, errors = load(urls[0], args.clients, args.requests_per_client)
        m = get(urls[0] + "/metrics")
        hit = metric(m, "apus_prefix_cache_hit_tokens") / max(1, metric(m, "apus_prefix_cache_queried_tokens"))
        rows.append((f"1 replica ({2 * args.kv_memory} MiB of KV), no router", hit, None, ttfts, tokens, seconds, errors))
    finally:
        stop_all()

    requests = args.clients * args.requests_per_client
    print(f"{args.clients} clients x {args.requests_per_client} requests, 4 system prompts of ~1,000 tokens, "
          f"16 tokens each, SmolLM2-135M Q4_1, 1 thread and {args.kv_memory} MiB of KV per replica\n")
    print("| setup | prefix hit rate | predicted | median TTFT s | p90 TTFT s | requests/s | tokens/s | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, hit, predicted, ttfts, tokens, seconds, errors in rows:
        p90 = sorted(ttfts)[int(0.9 * (len(ttfts) - 1))] if ttfts else float("nan")
        print(f"| {name} | {hit:.1%} | {'' if predicted is None else f'{predicted:.1%}'} | "
              f"{statistics.median(ttfts) if ttfts else float('nan'):.2f} | {p90:.2f} | {requests / seconds:.2f} | "
              f"{tokens / seconds:.1f} | {len(errors)} |")
    base = rows[-1]
    ca, rr = rows[0], rows[1]
    print(f"\ncache-aware vs round-robin: median TTFT {statistics.median(rr[3]) / statistics.median(ca[3]):.2f}x lower; "
          f"cache-aware throughput {base[5] / ca[5]:.2f}x one replica's (requests per second)")


if __name__ == "__main__":
    main()
