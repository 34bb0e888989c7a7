#!/usr/bin/env python3
"""Checks deploy/kubernetes/ offline, each topology (a folder: replicas behind a router;
disaggregated/: prefill and decode workers behind one) on its own: every manifest against the
Kubernetes schemas (kubernetes-validate, strict), and against Apus itself: each container's
flags are ones its `apus` subcommand takes, the probes ask /health, the router's
--replicas-from-dns and --prefill-from-dns name headless Services on the right port that
select workers of the right role, the grace period outlasts preStop plus the drain, the
autoscalers' metric is one a live replica's /metrics exports, selectors match their pods.

    python3 kubernetes_test.py --manifests deploy/kubernetes --manifests deploy/kubernetes/disaggregated \
        --apus .build/release/apus --metrics FILE
"""
import argparse
import glob
import re
import subprocess
import sys

import yaml

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def check_topology(folder, apus, exported, helps):
    files = sorted(glob.glob(folder + "/*.yaml"))
    check(files, f"{folder}: no manifests")
    validated = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", *files], capture_output=True, text=True)
    print(validated.stdout + validated.stderr, end="")
    check(validated.returncode == 0, f"{folder}: kubernetes-validate failed")

    docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})

    def args_of(d):
        return d["spec"]["template"]["spec"]["containers"][0]["args"]

    def labels_of(d):
        return d["spec"]["template"]["metadata"]["labels"]

    def role_of(d):
        a = args_of(d)
        return a[a.index("--role") + 1] if "--role" in a else "both"

    workers = {n: d for n, d in deployments.items() if args_of(d)[0] == "serve"}
    routers = {n: d for n, d in deployments.items() if args_of(d)[0] == "router"}
    check(workers and routers, f"{folder}: needs serving and router deployments, has {sorted(deployments)}")

    def selected(selector):
        return [n for n, d in workers.items() if selector.items() <= labels_of(d).items()]

    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        check(d["spec"]["selector"]["matchLabels"].items() <= labels_of(d).items(), f"{name}: selector does not match its pods")
        for c in spec.get("initContainers", []) + spec["containers"]:
            command = c["args"][0]
            if command not in helps:
                helps[command] = subprocess.run([apus, command, "--help"], capture_output=True, text=True).stdout
            for flag in [a for a in c["args"] if a.startswith("--")]:
                check(re.search(re.escape(flag) + r"\b", helps[command]) is not None, f"{name}/{c['name']}: `apus {command}` takes no {flag}")
        for c in spec["containers"]:
            for probe in ("readinessProbe", "startupProbe"):
                if probe in c:
                    check(c[probe]["httpGet"]["path"] == "/health", f"{name}: {probe} does not ask /health")
            check("readinessProbe" in c and "livenessProbe" in c, f"{name}: needs readiness and liveness probes")
            check(c["resources"]["requests"].get("cpu") and c["resources"]["requests"].get("memory"), f"{name}: no resource requests")
            a = c["args"]
            drain = float(a[a.index("--drain-seconds") + 1]) if "--drain-seconds" in a else 30
            pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            check(pre > 0, f"{name}: no preStop drain")
            check(spec.get("terminationGracePeriodSeconds", 30) > drain + pre, f"{name}: the grace period ends before the drain")
            disaggregated = "--prefill-from-dns" in a
            for flag, roles in (("--replicas-from-dns", {"decode"} if disaggregated else {"both"}), ("--prefill-from-dns", {"prefill"})):
                if flag not in a:
                    continue
                host, port = a[a.index(flag) + 1].rsplit(":", 1)
                svc = services.get(host)
                check(svc is not None and svc["spec"].get("clusterIP") == "None", f"{name}: {host} is not a headless Service")
                if svc:
                    check(int(port) in [p["port"] for p in svc["spec"]["ports"]], f"{name}: {host} has no port {port}")
                    found = selected(svc["spec"]["selector"])
                    check(found, f"{name}: {host} selects no workers")
                    for w in found:
                        check(role_of(workers[w]) in roles, f"{name}: {host} selects {w}, whose role is {role_of(workers[w])}, not {'/'.join(roles)}")

    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        check(hpa["spec"]["scaleTargetRef"]["name"] in deployments, f"{name}: scales no deployment here")
        for m in hpa["spec"]["metrics"]:
            metric = m["pods"]["metric"]["name"]
            check(metric in exported, f"{name}: a replica exports no {metric}")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        check(selected(pdb["spec"]["selector"]["matchLabels"]), f"{name}: selects no workers")
    print(f"{folder}: {len(docs)} resources checked")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifests", required=True, action="append", help="a folder of one topology; repeat for each")
    parser.add_argument("--apus", required=True)
    parser.add_argument("--metrics", required=True, help="a file holding a live replica's /metrics")
    args = parser.parse_args()
    exported = {line.split()[0].split("{")[0] for line in open(args.metrics) if line.strip() and not line.startswith("#")}
    helps = {}
    for folder in args.manifests:
        check_topology(folder, args.apus, exported, helps)
    for f in failures:
        print("FAIL", f)
    print(f"{len(args.manifests)} topologies checked, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
