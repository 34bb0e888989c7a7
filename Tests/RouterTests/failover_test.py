#!/usr/bin/env python3
"""A replica killed (SIGKILL) while it streams, then another told to drain (SIGTERM): every
request still completes, each client's stream with no missing or repeated token. Starts two `apus serve` processes and
`apus router` in front, runs the streamed requests (greedy; chat and completions) once with
both replicas alive for reference, then again, killing the replica that serves the most
streams once every stream has had a few tokens; each stream's text and usage must equal the
reference, and the router must report the resumed streams. Then the killed replica is
started again and the other gets SIGTERM (1 s of drain) under the same load: its streams
are handed off to the router at the drain deadline and resumed on the restarted one.

With --netns (root), each replica runs in a network namespace of its own made for the run
(`ip netns`, a veth pair each, 10.77.N.0/30), so the router reaches it across a network
link rather than loopback; the namespaces are removed at the end.

    python3 failover_test.py --apus .build/release/apus --model GGUF [--requests 16] [--netns]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


class Namespaces:
    """One network namespace per replica, each joined to this one by a veth pair."""

    def __init__(self, count):
        tag = os.getpid() % 10000
        self.names = [f"apus{tag}r{i}" for i in range(count)]
        self.addresses = []
        for i, name in enumerate(self.names):
            subnet = 10 * (tag % 20) + i  # several runs at once get different subnets
            outside, inside = f"av{tag}r{i}", f"av{tag}r{i}n"
            host, guest = f"10.77.{subnet}.1", f"10.77.{subnet}.2"
            for cmd in (f"ip netns add {name}",
                        f"ip link add {outside} type veth peer name {inside}",
                        f"ip link set {inside} netns {name}",
                        f"ip addr add {host}/30 dev {outside}", f"ip link set {outside} up",
                        f"ip netns exec {name} ip addr add {guest}/30 dev {inside}",
                        f"ip netns exec {name} ip link set {inside} up",
                        f"ip netns exec {name} ip link set lo up"):
                subprocess.run(cmd.split(), check=True)
            self.addresses.append(guest)

    def prefix(self, i):
        return ["ip", "netns", "exec", self.names[i]]

    def remove(self):
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)  # takes its veth pair with it


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
                                   "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
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
    # Enough that the drained replica cannot finish its streams within its 0.25 s of drain:
    # every stream runs to max_tokens (ignore_eos); eight streams on one thread took over 3 s
    # on the fastest machine here.
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--netns", action="store_true", help="each replica in a network namespace of its own")
    args = parser.parse_args()
    ports = [free_port() for _ in range(3)]
    namespaces = Namespaces(2) if args.netns else None
    hosts = namespaces.addresses if namespaces else ["127.0.0.1"] * 2

    def replica(i):
        return subprocess.Popen((namespaces.prefix(i) if namespaces else []) +
                                [args.apus, "serve", "--model", args.model, "--host", hosts[i], "--port", str(ports[i]), "--threads", "1",
                                 "--kv-memory", "128", "--drain-seconds", "0.25"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    replicas = [replica(0), replica(1)]
    router_log = tempfile.TemporaryFile()
    urls = [f"http://{hosts[i]}:{p}" for i, p in enumerate(ports[:2])]
    router = subprocess.Popen([args.apus, "router", "--port", str(ports[2]), "--policy", "round-robin", "--health-interval", "0.5",
                               "--replica", urls[0], "--replica", urls[1]], stdout=subprocess.DEVNULL, stderr=router_log)
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

        def under_load(stop, signal_name):
            """Runs the streams, stops a replica once each has had a few pieces; checks them."""
            progress = [0] * args.requests
            threads, results = run(base, args.requests, args.max_tokens, progress)
            deadline = time.time() + 120
            while min(progress) < 3 and time.time() < deadline:
                time.sleep(0.02)
            before = resumed_streams()
            stop()
            stopped_at = list(progress)
            for t in threads:
                t.join()
            for i, ((text, usage, reason, errors), (want, want_usage, want_reason, _)) in enumerate(zip(results, reference)):
                if errors:
                    failures.append(f"{signal_name}, request {i}: {errors}")
                elif (text, usage, reason) != (want, want_usage, want_reason):
                    failures.append(f"{signal_name}, request {i} differs from the run without it:\n  got  {text!r} {usage} {reason}\n"
                                    f"  want {want!r} {want_usage} {want_reason}")
            resumed = resumed_streams() - before
            print(f"{signal_name}: {args.requests} streams, replica stopped after {min(stopped_at)}..{max(stopped_at)} pieces each; "
                  f"{int(resumed)} streams resumed on the other replica")
            if resumed == 0:
                failures.append(f"{signal_name}: the router resumed no stream")

        def resumed_streams():
            metrics = get(base + "/metrics")
            return next((float(l.split()[1]) for l in metrics.splitlines() if l.startswith("apus_router_resumed_streams_total ")), 0)

        print(f"replicas at {', '.join(urls)}{' (each in its own network namespace)' if namespaces else ''}")
        under_load(lambda: replicas[0].send_signal(signal.SIGKILL), "SIGKILL")
        replicas[0].wait()
        replicas[0] = replica(0)
        wait_ready(urls[0])
        def healthy():
            gauge = f'apus_router_replica_healthy{{replica="{urls[0]}"}} '
            return any(l.startswith(gauge) and float(l.split()[-1]) == 1 for l in get(base + "/metrics").splitlines())
        deadline = time.time() + 30
        while not healthy() and time.time() < deadline:
            time.sleep(0.1)  # until the router's health check sees it back
        under_load(lambda: replicas[1].send_signal(signal.SIGTERM), "SIGTERM")
    finally:
        for p in replicas + [router]:
            if p.poll() is None:
                p.terminate()
        for p in replicas + [router]:
            p.wait()
        if namespaces:
            namespaces.remove()
    if failures:
        router_log.seek(0)
        print("router's log (last 40 lines):\n" + "\n".join(router_log.read().decode(errors="replace").splitlines()[-40:]))
    for f in failures:
        print("FAIL", f)
    print(f"{args.requests} requests, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
