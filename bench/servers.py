"""What the serving benchmarks share: starting pinned `apus` processes, waiting for their
health, reading their Prometheus metrics."""
import json
import os
import subprocess
import sys
import time
import urllib.request


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
        time.sleep(0.2)
    sys.exit(f"{url} did not become ready")


def metric(text, name):
    """The value of an unlabelled sample in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Processes:
    """Processes started for one setup, each pinned to a core when one is given."""

    def __init__(self, logs=None):
        self.procs = []
        self.logs = logs

    def start(self, cmd, core=None):
        full = (["taskset", "-c", str(core)] if core is not None else []) + cmd
        out = subprocess.DEVNULL
        if self.logs:
            os.makedirs(self.logs, exist_ok=True)
            out = open(os.path.join(self.logs, f"{len(self.procs)}-{cmd[1]}-{cmd[-1].replace('/', '_')[-20:]}.log"), "a")
        p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()
        self.procs.clear()
