#!/usr/bin/env python3
"""`kptrace monitor` at scale, against the Kubernetes API stand-in (tests/kubeapi_standin.py):

* a cluster of ``--nodes`` Nodes (default 5,000, each shaped like a real one: labels, addresses, podCIDR,
  conditions and a list of images, which the monitor drops on arrival) and ``--services`` Services
  (default 10,000, ``--endpoints`` each, one EndpointSlice a Service: benchmarks/gen_cluster.py);
* node-0's rules: the gen_synthetic.py dump of that cluster, as a bundle (so every Node is watched, as in the
  Deployment, and the first check compares 10,000 Service ports);
* measured: time until /readyz (three paged lists, watches open, the first check done), the first check's
  duration, then ``--events`` EndpointSlice updates sent as fast as the stand-in takes them: how fast the
  monitor's kptrace_watch_events_total follows (events per second end to end), and the monitor's RSS
  (VmRSS now, VmHWM peak) after the lists, after the check and after the events.

    python3 benchmarks/monitor.py                       # 5,000 nodes, 10,000 Services, 20,000 events
    python3 benchmarks/monitor.py --nodes 500 --services 1000 --events 2000   # a quick look

Where the stand-in differs from a real API server (the figures measure the monitor, bounded by the
stand-in where it is the slower side, which the output says): one Python process (the same 2 cores as
the monitor), the whole history in memory, HTTP/1.1 without TLS or authentication, JSON only (no
protobuf), no watch cache, no priority and fairness. A real API server sends events from its watch cache
in Go, much faster than this stand-in can produce them; the events/s here are a lower bound for the
monitor.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

from gen_cluster import cluster_state  # noqa: E402
from gen_synthetic import generate  # noqa: E402
from kubeapi_standin import StandIn  # noqa: E402


def node(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"node-{i}", "labels": {"kubernetes.io/hostname": f"node-{i}", "topology.kubernetes.io/zone":
                                                          f"zone-{'abc'[i % 3]}", "node.kubernetes.io/instance-type": "m5.large"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": {"podCIDR": f"10.{i // 256}.{i % 256}.0/24", "podCIDRs": [f"10.{i // 256}.{i % 256}.0/24"]},
            "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.{i // 256}.{i % 256}"},
                                     {"type": "Hostname", "address": f"node-{i}"}],
                       "conditions": [{"type": t, "status": "False", "reason": "KubeletHasSufficient" + t,
                                       "lastHeartbeatTime": "2026-12-02T00:00:00Z", "lastTransitionTime": "2026-12-01T00:00:00Z",
                                       "message": "kubelet has sufficient " + t} for t in ("Memory", "Disk", "PID")],
                       "images": [{"names": [f"registry.example/app-{k}@sha256:{'0' * 64}", f"registry.example/app-{k}:v{k}"],
                                   "sizeBytes": 100_000_000 + k} for k in range(20)],
                       "nodeInfo": {"kernelVersion": "6.8.0", "kubeletVersion": "v1.33.0", "containerRuntimeVersion": "containerd://2.0"}}}


def rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out["VmRSS"], out["VmHWM"]


def scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


def events_seen(m: dict[str, float]) -> float:
    return sum(v for k, v in m.items() if k.startswith("kptrace_watch_events_total{resource=endpointslices") and "BOOKMARK" not in k)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--events", type=int, default=20000)
    a = ap.parse_args()

    t0 = time.monotonic()
    state = cluster_state(a.services, a.endpoints)
    objects = [o for o in state["items"] if o["kind"] != "Node"] + [node(i) for i in range(a.nodes)]
    print(f"cluster: {a.nodes} nodes, {a.services} Services, {sum(o['kind'] == 'EndpointSlice' for o in objects)} EndpointSlices "
          f"({time.monotonic() - t0:.1f} s to make)")
    slices = [o for o in objects if o["kind"] == "EndpointSlice"]
    with tempfile.TemporaryDirectory() as tmp, StandIn(objects=objects, bookmark_interval=5.0) as api:
        # node-0's rules as a bundle: with a bundle directory the monitor watches every Node (a lone --dump or --local
        # would watch just its own), as the Deployment does
        bundle = Path(tmp) / "bundles" / "node-0"
        bundle.mkdir(parents=True)
        (bundle / "iptables-save.txt").write_text("\n".join(generate(a.services, a.endpoints)) + "\n")
        (bundle / "meta.json").write_text(json.dumps({"version": 1, "node": "node-0", "source": "local",
                                                      "time": "2026-12-02T00:00:00Z", "kube_proxy_mode": "iptables"}))
        kc = api.kubeconfig(Path(tmp) / "kc")
        proc = subprocess.Popen([sys.executable, "-m", "kptrace", "monitor", "--bundle", str(bundle.parent),
                                 "--kubeconfig", kc, "--listen", "127.0.0.1:0", "--interval", "3600", "--debounce", "3600",
                                 "--log-level", "info"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        try:
            start = time.monotonic()
            for line in proc.stderr:  # the first log line says where it listens
                port = json.loads(line)["port"]
                break
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep the pipe drained
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30).status == 200:
                        break
                except Exception:
                    pass
                time.sleep(0.2)
            ready = time.monotonic() - start
            m = scrape(port)
            check = m.get("kptrace_check_duration_seconds_sum", 0)
            rss_ready = rss(proc.pid)
            print(f"ready after {ready:.1f} s (lists, watches, first check); first check of node-0 ({a.services} Service ports): "
                  f"{check:.1f} s; findings {m.get('kptrace_node_drift_findings{node=node-0,severity=error}', 0):.0f}")
            print("objects held: " + ", ".join(f"{r} {m.get(f'kptrace_cluster_objects{{resource={r}}}', 0):.0f}"
                                               for r in ("services", "endpointslices", "nodes")))
            print(f"RSS after lists and the first check: {rss_ready[0]:.0f} MB (peak {rss_ready[1]:.0f} MB)")

            base = events_seen(m)
            sent = [0, 0.0]

            def produce():
                t = time.monotonic()
                for k in range(a.events):
                    o = slices[k % len(slices)]
                    o = {**o, "metadata": {**o["metadata"], "labels": {**o["metadata"]["labels"], "bench": str(k)}}}
                    api.put(o)
                    sent[0] += 1
                sent[1] = time.monotonic() - t

            t = time.monotonic()
            producer = threading.Thread(target=produce)
            producer.start()
            while events_seen(scrape(port)) - base < a.events:
                time.sleep(0.2)
            took = time.monotonic() - t
            producer.join()
            after = rss(proc.pid)
            print(f"{a.events} EndpointSlice events: the stand-in produced them in {sent[1]:.1f} s ({a.events / sent[1]:.0f}/s), "
                  f"the monitor had all of them after {took:.1f} s: {a.events / took:.0f} events/s end to end"
                  + (" (bounded by the stand-in)" if took - sent[1] < 0.5 else ""))
            print(f"RSS after the events: {after[0]:.0f} MB (peak {after[1]:.0f} MB)")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
