"""Where the monitor reads nodes' rules from, and whether they changed since the last read.

A :class:`Target` is one node: ``read()`` gives its data plane. File targets (``--dump``, ``--bundle``)
have a fingerprint (each file's size and mtime), so a change is seen at the next poll and only that node
is checked again; targets read by commands (this machine, SSH, kube-proxy pods) are read every interval
and after a relevant cluster change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable

__all__ = ["Read", "Target", "RuleSource"]

#: A bundle's connection-tracking tables (``kptrace collect`` writes them where conntrack exists).
CONNTRACK_FILES = ("conntrack.txt", "conntrack6.txt")


@dataclass
class Read:
    """One node's rules as read: the data plane, and its conntrack tables as (source, text) when there are any."""

    dataplane: object
    conntrack: list[tuple[str, str]]


def _bundle_conntrack(path: str) -> list[tuple[str, str]]:
    out = []
    for name in CONNTRACK_FILES:
        try:
            with open(os.path.join(path, name)) as f:
                out.append((os.path.join(path, name), f.read()))
        except OSError:
            pass
    return out


@dataclass
class Target:
    node: str
    read: Callable[[], Read]
    fingerprint: Callable[[], object] | None = None  # files: changes when they change
    remote: bool = False  # read by running commands (parallel, in threads)


def _stat(paths: list[str]) -> tuple:
    out: list[tuple[str, int | None, int | None]] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p, None, None))
    return tuple(out)


def _bundle_files(path: str) -> list[str]:
    try:
        return sorted(os.path.join(path, f) for f in os.listdir(path))
    except OSError:
        return [path]


def _bundle_node(path: str) -> str:
    try:
        with open(os.path.join(path, "meta.json")) as f:
            return json.load(f).get("node") or os.path.basename(os.path.normpath(path))
    except (OSError, ValueError):
        return os.path.basename(os.path.normpath(path))


def _bundle_dirs(paths: list[str]) -> list[str]:
    """Each path is a bundle or a directory of them; looked at again every round (new bundles are picked up)."""
    out = []
    for p in paths:
        if os.path.isfile(os.path.join(p, "meta.json")):
            out.append(p)
        elif os.path.isdir(p):
            out += sorted(os.path.join(p, d) for d in os.listdir(p) if os.path.isfile(os.path.join(p, d, "meta.json")))
    return out


@dataclass
class RuleSource:
    """One kind of rule input, as ``kptrace drift`` takes it."""

    dumps: list[str]
    bundles: list[str]
    local: bool
    ssh: list[str]
    nodes: list[str]
    all_nodes: bool
    node_name: str | None
    node_ips: list[str]
    lenient: bool
    max_bytes: int
    selector: str = "k8s-app=kube-proxy"
    namespace: str = "kube-system"
    ssh_config: str | None = None
    kube: Callable[[], object] | None = None  # -> CoreV1Api, made once

    def targets(self, cluster_nodes: Callable[[], list[str]]) -> list[Target]:
        if self.dumps:
            from kptrace.load import load_dumps

            assert self.node_name is not None  # cli/monitor.py requires --node-name with --dump
            return [Target(self.node_name, lambda: Read(load_dumps(self.dumps, node_ips=self.node_ips, lenient=self.lenient,
                                                                   max_bytes=self.max_bytes), []),
                           lambda: _stat(self.dumps))]
        if self.bundles:
            from kptrace.load import load_bundle

            def bundle_target(path: str) -> Target:
                return Target(_bundle_node(path), lambda: Read(load_bundle(path, node_ips=self.node_ips, lenient=self.lenient),
                                                               _bundle_conntrack(path)),
                              lambda: _stat(_bundle_files(path)))

            return [bundle_target(p) for p in _bundle_dirs(self.bundles)]
        from kptrace.sources.runners import runner_targets

        # nodes through the API: the cache's node list, and the API client made when a node is first read
        nodes = cluster_nodes() if self.all_nodes and not (self.local or self.ssh) else self.nodes
        return [self._collected(node, make_runner) for node, make_runner in runner_targets(
            local=self.local, ssh=self.ssh, nodes=nodes, name=self.node_name, kube=self.kube, selector=self.selector,
            namespace=self.namespace, ssh_config=self.ssh_config)]

    def _collected(self, node: str, make_runner) -> Target:
        def read():
            from kptrace.load import load_bundle
            from kptrace.sources.bundle import collect

            runner = make_runner()
            try:
                bundle = collect(runner, node)
            finally:
                close = getattr(runner, "close", None)
                if close:
                    close()
            tables = [(f"{node}:{name}", bundle.files[name]) for name in CONNTRACK_FILES if bundle.files.get(name)]
            return Read(load_bundle(bundle=bundle, node_ips=self.node_ips, lenient=self.lenient), tables)

        return Target(node, read, remote=True)
