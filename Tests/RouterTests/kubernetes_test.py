#!/usr/bin/env python3
"""Checks deploy/kubernetes/ offline: every manifest against the Kubernetes schemas
(kubernetes-validate, strict), and against Apus itself: each container's flags are ones its
`apus` subcommand takes, the probes ask /health, the router's --replicas-from-dns names the
replicas' headless Service and port, the grace period outlasts preStop plus the drain, the
autoscaler's metric is one a live replica's /metrics exports, selectors match their pods.

    python3 kubernetes_test.py --manifests deploy/kubernetes --apus .build/release/apus --metrics FILE
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifests", required=True)
    parser.add_argument("--apus", required=True)
    parser.add_argument("--metrics", required=True, help="a file holding a live replica's /metrics")
    args = parser.parse_args()
    files = sorted(glob.glob(args.manifests + "/*.yaml"))
    check(files, "no manifests")
    validated = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", *files], capture_output=True, text=True)
    print(validated.stdout + validated.stderr, end="")
    check(validated.returncode == 0, "kubernetes-validate failed")

    docs = [d for f in files for d in yaml.safe_load_all(open(f)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    services = by_kind.get("Service", {})
    check({"apus-replica", "apus-router"} <= set(deployments), f"deployments: {sorted(deployments)}")

    helps = {}
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        check(d["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector does not match its pods")
        for c in spec.get("initContainers", []) + spec["containers"]:
            command = c["args"][0]
            if command not in helps:
                helps[command] = subprocess.run([args.apus, command, "--help"], capture_output=True, text=True).stdout
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
            if "--replicas-from-dns" in a:
                host, port = a[a.index("--replicas-from-dns") + 1].rsplit(":", 1)
                svc = services.get(host)
                check(svc is not None and svc["spec"].get("clusterIP") == "None", f"router: {host} is not a headless Service")
                if svc:
                    check(int(port) in [p["port"] for p in svc["spec"]["ports"]], f"router: {host} has no port {port}")
                    check(svc["spec"]["selector"].items() <= deployments["apus-replica"]["spec"]["template"]["metadata"]["labels"].items(),
                          f"router: {host} does not select the replicas")

    exported = {line.split()[0].split("{")[0] for line in open(args.metrics) if line.strip() and not line.startswith("#")}
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        check(hpa["spec"]["scaleTargetRef"]["name"] in deployments, f"{name}: scales no deployment here")
        for m in hpa["spec"]["metrics"]:
            metric = m["pods"]["metric"]["name"]
            check(metric in exported, f"{name}: a replica exports no {metric}")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        check(pdb["spec"]["selector"]["matchLabels"].items() <= deployments["apus-replica"]["spec"]["template"]["metadata"]["labels"].items(),
              f"{name}: selects no replica")

    for f in failures:
        print("FAIL", f)
    print(f"{len(docs)} resources checked, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
