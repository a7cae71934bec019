"""The monitor's loop: keep the cluster state current, check every node's rules on an interval, after a
relevant change of the cluster state (debounced: kube-proxy itself needs a moment to sync), and when a
rule file changes; publish the results as metrics and JSON log lines."""

from __future__ import annotations

import collections
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kptrace.errors import KptraceError

if TYPE_CHECKING:
    from kptrace.checks.selection import Profile
    from kptrace.model.cluster import ClusterState
    from kptrace.monitor.rules import RuleSource

__all__ = ["MonitorOptions", "run"]


@dataclass
class MonitorOptions:
    rules: RuleSource
    cluster_state: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    listen: str = "0.0.0.0:9633"
    interval: float = 60.0
    debounce: float = 5.0
    poll: float = 1.0
    watch_timeout: int = 300
    api_timeout: float = 30.0
    backoff_max: float = 30.0
    parallel: int = 16
    profile: Profile | None = None
    ignore: list[str] = field(default_factory=list)
    log_level: str = "info"
    max_bytes: int = 0
    only_node: str | None = None  # the one node whose rules are read: watch just that Node


class Monitor:
    def __init__(self, opts: MonitorOptions) -> None:
        from kptrace.monitor.cache import RESOURCES, ClusterCache
        from kptrace.monitor.log import Log
        from kptrace.monitor.metrics import Metrics

        self.opts = opts
        self.log = Log(opts.log_level)
        self.live = opts.cluster_state is None
        self.metrics = Metrics(RESOURCES if self.live else ())
        self.cache = ClusterCache()
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.changed_at: float | None = None  # first relevant cluster change not yet checked
        self.file_state: ClusterState | None = None
        self.file_print: tuple[object, ...] | None = None  # (size, mtime) of the state file, ("missing",) if unreadable
        self.prints: dict[str, object] = {}  # node -> fingerprint at its last read (file targets)
        self.known_nodes: set[str] = set()
        self.rounds = 0
        self.tick = time.monotonic()
        self.api: Any = None  # kubernetes.client.ApiClient, once the watches start

    # -- health -----------------------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        # a round over 5,000 nodes can take long: the loop ticks between nodes, so a stuck read shows here
        late = time.monotonic() - self.tick
        limit = max(120.0, 3 * self.opts.interval)
        return (late < limit, "ok" if late < limit else f"the check loop has not moved for {late:.0f} s")

    def ready(self) -> tuple[bool, str]:
        missing = []
        if self.live:
            from kptrace.monitor.cache import RESOURCES

            missing += [f"{r} not listed yet" for r in RESOURCES if r not in self.cache.synced]
        elif self.file_state is None:
            missing.append("the cluster state file has not been read")
        if self.rounds == 0:
            missing.append("no round of checks finished yet")
        self.metrics.ready.set(0 if missing else 1)
        return (not missing, "ready" if not missing else "; ".join(missing))

    # -- the cluster state ----------------------------------------------------------------------------
    def changed(self) -> None:
        if self.changed_at is None:
            self.changed_at = time.monotonic()
        self.wake.set()

    def _start_watches(self) -> None:
        from kptrace.monitor.cache import RESOURCES
        from kptrace.monitor.watch import Watcher, api_client

        self.api = api_client(self.opts.kubeconfig, self.opts.context)
        for resource in RESOURCES:
            selector = f"metadata.name={self.opts.only_node}" if resource == "nodes" and self.opts.only_node else None
            Watcher(resource, self.api, self.cache, self.metrics, self.log, self.stop, self.changed,
                    watch_timeout=self.opts.watch_timeout, api_timeout=self.opts.api_timeout,
                    backoff_max=self.opts.backoff_max, field_selector=selector).start()

    def _read_state_file(self) -> bool:
        """Read the --cluster-state file when it changed; True when a new state was read."""
        import os

        path = self.opts.cluster_state
        assert path is not None  # file mode: there is no live API
        try:
            st = os.stat(path)
            fp = (st.st_size, st.st_mtime_ns)
        except OSError as e:
            fp = None
            if self.file_print != ("missing",):
                self.log.error("cannot read the cluster state", path=path, error=str(e))
                self.metrics.state_errors.inc()
                self.file_print = ("missing",)
            return False
        if fp == self.file_print:
            return False
        self.file_print = fp
        from kptrace.parsers.cluster_state import COMMAND, parse_cluster_state
        from kptrace.sources.files import DEFAULT_MAX_BYTES, read_source

        try:
            src = read_source(path, max_bytes=self.opts.max_bytes or DEFAULT_MAX_BYTES, tool=COMMAND)
            self.file_state = parse_cluster_state(src.text, src.name)
        except KptraceError as e:
            self.metrics.state_errors.inc()
            self.log.error("cannot read the cluster state", path=path, error=e.render()[:1000])
            return False
        self.log.info("cluster state read", path=path, services=len(self.file_state.services))
        return True

    def state(self):
        return self.cache.state() if self.live else self.file_state

    # -- checks ----------------------------------------------------------------------------------------
    def _check(self, target, read_result, started: float, state) -> None:
        from kptrace.checks.drift import check_node, select_findings

        read, error = read_result
        node = target.node
        if error is not None:
            self.metrics.node_failed(node, time.monotonic() - started)
            self.log.error("cannot read the node's rules", node=node, error=error[:1000])
            return
        try:
            kwargs: dict[str, Any] = {"profile": self.opts.profile} if self.opts.profile is not None else {}
            report = check_node(read.dataplane, state, node, **kwargs)
            stale = self._stale_conntrack(read, state, node, report)
            select_findings(report, self.opts.ignore)
        except KptraceError as e:
            self.metrics.node_failed(node, time.monotonic() - started)
            self.log.error("check failed", node=node, error=e.render()[:1000])
            return
        seconds = time.monotonic() - started
        self.metrics.node_checked(node, report.findings, len(report.ports), seconds)
        if stale is not None:
            self.metrics.stale_conntrack.labels(node).set(stale)
        kinds = collections.Counter(f.kind for f in report.findings)
        self.log.info("checked", node=node, findings=len(report.findings), kinds=dict(kinds), service_ports=len(report.ports),
                      seconds=round(seconds, 3), sources=report.sources)

    def _stale_conntrack(self, read, state, node: str, report) -> int | None:
        """Stale conntrack entries of the node (issue 15's check), when its tables were read and the check is
        installed; they join the findings as ``stale-conntrack``. None: not known."""
        if not read.conntrack:
            return None
        try:
            from kptrace.checks.expected import expected_ports
            from kptrace.checks.stale import find_stale, stale_findings
            from kptrace.parsers.conntrack import iter_conntrack
        except ImportError:  # an install without the conntrack reader
            return None
        expected: dict[str, set[str]] = {}
        kwargs: dict[str, Any] = {"profile": self.opts.profile} if self.opts.profile is not None else {}
        for fam in sorted(read.dataplane.rulesets):
            for e in expected_ports(state, node, fam, **kwargs)[0]:
                eps = {x.address for x in (e.cluster_chain_endpoints or ())} | {x.address for x in (e.local_chain_endpoints or ())}
                expected.setdefault(e.spn, set()).update(eps)

        tables = [iter_conntrack(text.splitlines(), source, lenient=True) for source, text in read.conntrack]
        found = find_stale(read.dataplane, *tables, expected=expected)
        report.findings.extend(stale_findings(found, node))
        return len(found.stale)

    @staticmethod
    def _read(target):
        try:
            return target.read(), None
        except KptraceError as e:
            return None, e.render()
        except Exception as e:  # one node's surprise must not stop the monitor
            return None, f"{type(e).__name__}: {e}"

    def round(self, targets: list) -> bool:
        """Read and check ``targets``; True when every node was read."""
        started = time.monotonic()
        ok = True
        state = self.state()  # one snapshot a round: events during a long round do not rebuild it node by node
        local = [t for t in targets if not t.remote]
        remote = [t for t in targets if t.remote]
        for t in local:
            t0 = time.monotonic()
            if t.fingerprint is not None:
                self.prints[t.node] = t.fingerprint()
            result = self._read(t)
            ok &= result[1] is None
            self._check(t, result, t0, state)
            self.tick = time.monotonic()
        if remote:
            # Reads run `parallel` at a time (they wait on the network); checks run here, one at a time (CPU).
            # At most 2 x parallel read data planes are held at once, whatever the number of nodes.
            with ThreadPoolExecutor(max_workers=self.opts.parallel) as pool:
                pending: collections.deque[tuple[Any, float, Future[Any]]] = collections.deque()
                todo = iter(remote)
                for t in todo:
                    pending.append((t, time.monotonic(), pool.submit(self._read, t)))
                    if len(pending) >= 2 * self.opts.parallel:
                        break
                while pending and not self.stop.is_set():
                    t, t0, fut = pending.popleft()
                    result = fut.result()
                    ok &= result[1] is None
                    self._check(t, result, t0, state)
                    del result
                    self.tick = time.monotonic()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append((nxt, time.monotonic(), pool.submit(self._read, nxt)))
                for _, _, fut in pending:
                    fut.cancel()
        seconds = time.monotonic() - started
        self.metrics.round_duration.set(seconds)
        if ok:
            self.metrics.last_round.set(time.time())
        return ok

    def _targets(self) -> list:
        targets = self.opts.rules.targets(self.cache.node_names)
        names = {t.node for t in targets}
        for gone in self.known_nodes - names:
            self.metrics.forget_node(gone)
            self.log.info("node no longer checked", node=gone)
        self.known_nodes = names
        self.metrics.nodes.set(len(names))
        return targets

    def loop(self) -> None:
        from kptrace.monitor.metrics import serve

        server = serve(self.opts.listen, self.metrics, self)
        host, port = server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        self.log.info("listening", address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}", port=port,
                      paths=["/metrics", "/healthz", "/readyz"])
        if self.live:
            self._start_watches()
        next_full = time.monotonic()
        try:
            while not self.stop.is_set():
                self.tick = now = time.monotonic()
                full = False
                reason = ""
                if self.live:
                    from kptrace.monitor.cache import RESOURCES

                    have_state = all(r in self.cache.synced for r in RESOURCES)
                else:
                    if self._read_state_file():
                        full, reason = True, "cluster state file changed"
                    have_state = self.file_state is not None
                if have_state:
                    if now >= next_full:
                        full, reason = True, reason or "interval"
                    elif self.changed_at is not None and now - self.changed_at >= self.opts.debounce:
                        full, reason = True, "cluster change"
                if full:
                    self.changed_at = None
                    targets = self._targets()
                    self.log.debug("round", reason=reason, nodes=len(targets))
                    self.round(targets)
                    self.rounds += 1
                    next_full = time.monotonic() + self.opts.interval
                elif have_state and (self.opts.rules.dumps or self.opts.rules.bundles):
                    changed = [t for t in self._targets() if t.fingerprint is not None and t.fingerprint() != self.prints.get(t.node)]
                    if changed:
                        self.log.info("rules changed", nodes=[t.node for t in changed])
                        self.round(changed)
                self.ready()
                wait = self.opts.poll
                if self.changed_at is not None:
                    wait = min(wait, max(0.0, self.changed_at + self.opts.debounce - time.monotonic()))
                self.wake.wait(wait)
                self.wake.clear()
        finally:
            server.shutdown()
            self.log.info("stopped")


def run(opts: MonitorOptions) -> None:
    """Run the monitor until SIGTERM or SIGINT."""
    m = Monitor(opts)

    def stop(signum, frame):
        m.log.info("stopping", signal=signal.Signals(signum).name)
        m.stop.set()
        m.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    m.loop()
