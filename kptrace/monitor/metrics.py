"""What Prometheus scrapes (prometheus_client, its own registry) and the HTTP endpoints:

``/metrics``  the metrics below, in the text exposition format
``/healthz``  200 while the check loop is alive (it ticks at least every few seconds), else 503
``/readyz``   200 once the cluster state is known (every watch listed, or the file read) and the first
              round of checks is done, else 503 with what is missing

Findings are gauges set at each check of a node (a Service port whose drift is fixed drops to no series);
errors and watch restarts are counters. Every name starts ``kptrace_``.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from kptrace import __version__

__all__ = ["Metrics", "serve"]

WATCH_RESTART_REASONS = ("expired", "disconnect", "error")


class Metrics:
    def __init__(self, resources: tuple[str, ...] = ()) -> None:
        disable_created_metrics()  # the *_created series double the output and no alert reads them
        r = self.registry = CollectorRegistry()
        Info("kptrace_build", "The kptrace version of this monitor.", registry=r).info({"version": __version__})
        self.findings = Gauge("kptrace_drift_findings", "Drift findings of the last check of a node, by Service port and kind.",
                              ["node", "service", "kind", "severity"], registry=r)
        self.node_findings = Gauge("kptrace_node_drift_findings", "Drift findings of the last check of a node, by severity.",
                                   ["node", "severity"], registry=r)
        self.stale_conntrack = Gauge("kptrace_stale_conntrack_entries", "Conntrack entries of a node that still send a "
                                     "Service's connections where its rules no longer do (when the node's table is read).",
                                     ["node"], registry=r)
        self.node_ports = Gauge("kptrace_node_service_ports", "Service ports compared at the last check of a node.",
                                ["node"], registry=r)
        self.last_success = Gauge("kptrace_last_successful_check_timestamp_seconds",
                                  "When a node's rules were last read and checked (Unix time).", ["node"], registry=r)
        self.last_round = Gauge("kptrace_last_successful_round_timestamp_seconds",
                                "When a round of checks last finished with every node read (Unix time).", registry=r)
        self.duration = Histogram("kptrace_check_duration_seconds", "Time to read one node's rules and check them.",
                                  buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.round_duration = Gauge("kptrace_round_duration_seconds", "How long the last round of checks took.", registry=r)
        self.checks = Counter("kptrace_checks", "Node checks by result (ok, drift, error).", ["result"], registry=r)
        self.rule_errors = Counter("kptrace_rule_read_errors", "Failures to read or parse a node's rules.", ["node"], registry=r)
        self.state_errors = Counter("kptrace_cluster_state_errors", "Failures to read the --cluster-state file.", registry=r)
        self.watch_restarts = Counter("kptrace_watch_restarts", "API watches started again after something went wrong: "
                                      "expired (410 Gone, relisted), disconnect, error.", ["resource", "reason"], registry=r)
        self.watch_events = Counter("kptrace_watch_events", "Watch events received, by resource and type.",
                                    ["resource", "type"], registry=r)
        self.relists = Counter("kptrace_relists", "Full lists of a resource (start, and after 410 Gone).", ["resource"], registry=r)
        self.objects = Gauge("kptrace_cluster_objects", "Objects in the monitor's view of the cluster.", ["resource"], registry=r)
        self.nodes = Gauge("kptrace_nodes", "Nodes whose rules the monitor reads.", registry=r)
        self.ready = Gauge("kptrace_ready", "1 when /readyz answers 200.", registry=r)
        for resource in resources:  # series that exist from the start make rate() and absent() behave
            for reason in WATCH_RESTART_REASONS:
                self.watch_restarts.labels(resource, reason)
            self.relists.labels(resource)
        for result in ("ok", "drift", "error"):
            self.checks.labels(result)
        self._series: dict[str, set[tuple[str, str, str]]] = {}
        self._lock = threading.Lock()

    def node_checked(self, node: str, findings: list, ports: int, seconds: float) -> None:
        """Replace a node's finding series with this check's."""
        counts: dict[tuple[str, str, str], int] = {}
        for f in findings:
            key = (f.service, f.kind, f.severity)
            counts[key] = counts.get(key, 0) + 1
        with self._lock:
            for key in self._series.get(node, set()) - counts.keys():
                self.findings.remove(node, *key)
            for key, n in counts.items():
                self.findings.labels(node, *key).set(n)
            self._series[node] = set(counts)
        for severity in ("error", "warning"):
            self.node_findings.labels(node, severity).set(sum(n for k, n in counts.items() if k[2] == severity))
        self.node_ports.labels(node).set(ports)
        self.last_success.labels(node).set(time.time())
        self.duration.observe(seconds)
        self.checks.labels("drift" if findings else "ok").inc()

    def node_failed(self, node: str, seconds: float) -> None:
        self.rule_errors.labels(node).inc()
        self.duration.observe(seconds)
        self.checks.labels("error").inc()

    def forget_node(self, node: str) -> None:
        """A node that left the cluster: its series go (its error counter stays, as counters do)."""
        with self._lock:
            for key in self._series.pop(node, set()):
                self.findings.remove(node, *key)
        for g, labels in ((self.node_findings, ((node, "error"), (node, "warning"))), (self.node_ports, ((node,),)),
                          (self.stale_conntrack, ((node,),)),
                          (self.last_success, ((node,),))):
            for lv in labels:
                try:
                    g.remove(*lv)
                except KeyError:
                    pass


def serve(listen: str, metrics: Metrics, health) -> ThreadingHTTPServer:
    """Start the HTTP server on ``HOST:PORT`` in a thread; ``health.healthy()`` and ``health.ready()`` give
    ``(ok, text)``."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                return self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            if path in ("/healthz", "/readyz"):
                ok, text = health.healthy() if path == "/healthz" else health.ready()
                return self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
            return self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server_class = ThreadingHTTPServer
    if ":" in host:
        import socket

        class V6(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        server_class = V6
    server = server_class((host, int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
