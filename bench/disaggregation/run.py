#!/usr/bin/env python3
"""Disaggregated prefill and decode against the same two workers colocated, on a mix of long
(~2,000-token) and short prompts: what long prompts do to the short requests' inter-token
latency, and what the split costs in throughput.

Two workers, each pinned to its own core with one thread, behind `apus router`:
- colocated: both `apus serve --role both`, the router spreading requests over them
  (least-loaded: every prompt is distinct, so there is no prefix to follow);
- disaggregated: one `apus serve --role prefill`, one `--role decode`, the router pairing them
  (`--prefill URL --decode URL`): every prompt is computed on the first and its KV blocks
  streamed into the second, which generates.

Short clients stream greedy answers to short prompts one after another; long clients send
~2,000-token prompts with a few tokens to generate; the workload is fixed, so throughput is
its generated tokens over the wall time it took. Prints a Markdown table: inter-token
latency of the short streams (median, p99), their TTFT, generated tokens per second over the
whole run, and whether every request's text was the same in both setups.

    python3 bench/disaggregation/run.py [--apus .build/release/apus] [--short-clients 6] [--long-clients 2]
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

SUBJECTS = ["tides", "bridges", "orchards", "glaciers", "printing presses", "lighthouses", "beehives", "violins"]


def long_prompt(client, n):
    """About 2,000 tokens, distinct from the first word."""
    facts = [f"Note {k} of report {client}.{n}: the survey of {SUBJECTS[(client + k) % len(SUBJECTS)]} in district {k * 7 + n} "
             f"counted {k * 13 + client} sites, of which {k + 3} needed repair before the spring inspection."
             for k in range(1, 50)]
    return f"Report {client}.{n}. " + " ".join(facts) + " Summarise the report in one sentence."


def short_prompt(client, n):
    return f"Question {client}.{n}: explain in a few sentences how {SUBJECTS[(client + n) % len(SUBJECTS)]} work."


def stream(url, prompt, max_tokens):
    """The text, the arrival time of each token after the request was sent, and the TTFT."""
    body = {"model": "smollm2-135m", "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "messages": [{"role": "user", "content": prompt}]}
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.time()
    text, times = "", []
    with urllib.request.urlopen(request, timeout=900) as r:
        for line in r:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if delta:
                text += delta
                times.append(time.time() - start)
    return text, times


def load(url, short_clients, short_requests, short_tokens, long_clients, long_requests, long_tokens):
    """A fixed workload: every client sends its requests one after another."""
    texts, gaps, ttfts, tokens, errors = {}, [], [], [0], []
    lock = threading.Lock()

    def client(kind, c, count, max_tokens):
        for n in range(count):
            try:
                text, times = stream(url, (short_prompt if kind == "short" else long_prompt)(c, n), max_tokens)
                with lock:
                    texts[(kind, c, n)] = text
                    tokens[0] += len(times)
                    if kind == "short":
                        ttfts.append(times[0] if times else float("nan"))
                        gaps.extend(b - a for a, b in zip(times, times[1:]))
            except Exception as e:
                with lock:
                    errors.append(str(e))

    start = time.time()
    threads = [threading.Thread(target=client, args=("short", c, short_requests, short_tokens)) for c in range(short_clients)]
    threads += [threading.Thread(target=client, args=("long", c, long_requests, long_tokens)) for c in range(long_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return dict(texts=texts, gaps=gaps, ttfts=ttfts, tokens=tokens[0], seconds=time.time() - start, errors=errors)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--apus", default=".build/release/apus")
    parser.add_argument("--short-clients", type=int, default=6)
    parser.add_argument("--short-requests", type=int, default=8, help="per short client")
    parser.add_argument("--short-tokens", type=int, default=256)
    parser.add_argument("--long-clients", type=int, default=2)
    parser.add_argument("--long-requests", type=int, default=1, help="per long client")
    parser.add_argument("--long-tokens", type=int, default=8)
    parser.add_argument("--prefill-token-budget", type=int, default=128,
                        help="the prefill worker's --token-budget (the colocated workers keep the default, 512)")
    parser.add_argument("--logs", help="a folder for the workers' and routers' logs")
    args = parser.parse_args()
    processes = Processes(args.logs)
    router = "http://127.0.0.1:8100"

    def worker(port, core, role):
        budget = ["--token-budget", str(args.prefill_token_budget)] if role == "prefill" else []
        processes.start([args.apus, "serve", "--model", "smollm2-135m", "--port", str(port), "--threads", "1",
                         "--role", role] + budget, core=core)
        return f"http://127.0.0.1:{port}"

    setups = {
        "colocated": lambda: ["--policy", "least-loaded", "--replica", worker(8101, 0, "both"), "--replica", worker(8102, 1, "both")],
        "disaggregated": lambda: ["--prefill", worker(8101, 0, "prefill"), "--decode", worker(8102, 1, "decode")],
    }
    results = {}
    try:
        for name, routing in setups.items():
            flags = routing()
            for port in (8101, 8102):
                wait_ready(f"http://127.0.0.1:{port}")
            processes.start([args.apus, "router", "--port", "8100"] + flags)
            wait_ready(router)
            # One request first, so both setups start with their weights paged in.
            stream(router, short_prompt(99, 0), 4)
            results[name] = load(router, args.short_clients, args.short_requests, args.short_tokens,
                                 args.long_clients, args.long_requests, args.long_tokens)
            results[name]["router"] = get(router + "/metrics")
            processes.stop_all()
            r = results[name]
            print(f"{name}: {r['seconds']:.1f} s, {len(r['errors'])} errors {r['errors'][:2]}", file=sys.stderr, flush=True)
    finally:
        processes.stop_all()

    co, dis = results["colocated"], results["disaggregated"]
    shared = set(co["texts"]) & set(dis["texts"])
    same = sum(co["texts"][k] == dis["texts"][k] for k in shared)
    print(f"{args.short_clients} short clients x {args.short_requests} requests ({args.short_tokens} tokens each, past end of text), "
          f"{args.long_clients} long clients x {args.long_requests} prompts of ~2,000 tokens ({args.long_tokens} tokens each), "
          f"all at once; greedy, streamed; SmolLM2-135M Q4_1; two workers, each 1 thread on its own core; "
          f"prefill worker --token-budget {args.prefill_token_budget}\n")
    print("| setup | short ITL median ms | short ITL p99 ms | short TTFT median s | wall s | generated tokens/s | requests | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {1000 * statistics.median(r['gaps']):.1f} | {1000 * percentile(r['gaps'], 0.99):.1f} | "
              f"{statistics.median(r['ttfts']):.2f} | {r['seconds']:.1f} | {r['tokens'] / r['seconds']:.1f} | {len(r['texts'])} | {len(r['errors'])} |")
    prefills = [line for line in dis["router"].splitlines() if line.startswith("apus_router_prefills_total") or line.startswith("apus_router_kv_blocks")]
    print(f"\nshort ITL p99 {percentile(co['gaps'], 0.99) / percentile(dis['gaps'], 0.99):.2f}x lower disaggregated; "
          f"throughput {dis['tokens'] / dis['seconds'] / (co['tokens'] / co['seconds']):.2f}x colocated; "
          f"{same} of {len(shared)} requests in both runs gave the same text; router: {'; '.join(prefills)}")


if __name__ == "__main__":
    main()
