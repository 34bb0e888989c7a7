#!/usr/bin/env python3
"""A replica killed (SIGKILL) while it streams: every request still completes, each
client's stream with no missing or repeated token. Starts two `apus serve` processes and
`apus router` in front, runs the streamed requests (greedy; chat and completions) once with
both replicas alive for reference, then again, killing the replica that serves the most
streams once every stream has had a few tokens; each stream's text and usage must equal the
reference, and the router must report the resumed streams.

    python3 failover_test.py --apus .build/release/apus --model GGUF [--requests 16]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_ready(url, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if json.loads(get(url + "/health")).get("status") == "ok":
                return
        except Exception:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} did not become ready")


def request(i, max_tokens):
    if i % 2:
        return "/v1/completions", {"model": "m", "prompt": f"Story {i}: Once upon a time, in a town by the sea,", "max_tokens": max_tokens,
                                   "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    return "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": f"Write a long poem about the number {i}."}],
                                    "max_tokens": max_tokens, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
                                    "ignore_eos": True}


def run(base, n, max_tokens, progress):
    """Each request's (ids, text, usage, finish reason, errors) from its stream."""
    results = [None] * n

    def one(i):
        path, body = request(i, max_tokens)
        req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        ids, text, usage, reason, errors, roles = set(), "", None, None, [], 0
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                for line in r:
                    line = line.decode().rstrip("\n")
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        if line.startswith(": apus-token-ids"):
                            errors.append(f"the router's token ids reached the client: {line}")
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        errors.append(event["error"]["message"])
                        continue
                    ids.add((event["id"], event["created"]))
                    if event.get("usage"):
                        usage = event["usage"]
                    for c in event["choices"]:
                        piece = c.get("text") if "text" in c else c["delta"].get("content")
                        if c.get("delta", {}).get("role"):
                            roles += 1
                        if piece:
                            text += piece
                            progress[i] += 1
                        reason = c.get("finish_reason") or reason
        except Exception as e:
            errors.append(repr(e))
        if roles > 1:
            errors.append(f"{roles} role chunks")
        if len(ids) > 1:
            errors.append(f"the stream changed id: {ids}")
        results[i] = (text, usage and {k: usage[k] for k in ("prompt_tokens", "completion_tokens")}, reason, errors)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--apus", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    ports = [free_port() for _ in range(3)]
    replicas = [subprocess.Popen([args.apus, "serve", "--model", args.model, "--port", str(p), "--threads", "1", "--kv-memory", "128"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports[:2]]
    urls = [f"http://127.0.0.1:{p}" for p in ports[:2]]
    router = subprocess.Popen([args.apus, "router", "--port", str(ports[2]), "--policy", "round-robin", "--health-interval", "0.5",
                               "--replica", urls[0], "--replica", urls[1]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{ports[2]}"
    failures = []
    try:
        for u in urls + [base]:
            wait_ready(u)
        progress = [0] * args.requests
        threads, reference = run(base, args.requests, args.max_tokens, progress)
        for t in threads:
            t.join()
        for i, (text, usage, reason, errors) in enumerate(reference):
            if errors or not text:
                failures.append(f"reference {i}: {errors or 'no text'}")

        progress = [0] * args.requests
        threads, results = run(base, args.requests, args.max_tokens, progress)
        deadline = time.time() + 120
        while min(progress) < 3 and time.time() < deadline:
            time.sleep(0.02)
        victim = replicas[0]
        victim.send_signal(signal.SIGKILL)
        killed_at = list(progress)
        for t in threads:
            t.join()
        for i, ((text, usage, reason, errors), (want, want_usage, want_reason, _)) in enumerate(zip(results, reference)):
            if errors:
                failures.append(f"request {i}: {errors}")
            elif (text, usage, reason) != (want, want_usage, want_reason):
                failures.append(f"request {i} differs from the run without the kill:\n  got  {text!r} {usage} {reason}\n  want {want!r} {want_usage} {want_reason}")
        metrics = get(base + "/metrics")
        resumed = next((float(l.split()[1]) for l in metrics.splitlines() if l.startswith("apus_router_resumed_streams_total ")), 0)
        unfinished = sum(1 for p in killed_at if p < args.max_tokens)
        print(f"{args.requests} streams, replica killed after {min(killed_at)}..{max(killed_at)} pieces each; "
              f"{int(resumed)} streams resumed on the other replica")
        if resumed == 0 and unfinished:
            failures.append("the router resumed no stream")
    finally:
        for p in replicas + [router]:
            if p.poll() is None:
                p.terminate()
        for p in replicas + [router]:
            p.wait()
    for f in failures:
        print("FAIL", f)
    print(f"{args.requests} requests, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
