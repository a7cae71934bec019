"""Which nodes to read and how: this machine, SSH targets, or nodes through the Kubernetes API.

The choice is written once here for every command that reads live nodes (``collect``, ``drift``, the
single-node ``--local/--ssh/--node`` options, and the monitor). Each target is ``(node name, runner factory)``:
a runner is made only when its factory is called, so that each node's connection opens in its own worker.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

__all__ = ["runner_targets"]


def runner_targets(*, local: bool = False, ssh: Sequence[str] = (), nodes: Sequence[str] = (), all_nodes: bool = False,
                   name: str | None = None, kubeconfig: str | None = None, context: str | None = None,
                   kube: Callable[[], Any] | None = None, selector: str | None = None, namespace: str | None = None,
                   ssh_config: str | None = None, **ssh_options: Any) -> list[tuple[str, Callable[[], Any]]]:
    """The targets of the first source given: ``local`` (named ``name`` or the hostname), the ``ssh`` targets
    (named by host, or ``name`` for a single one; ``ssh_options`` go to ``SSHRunner``), else ``nodes`` through
    the Kubernetes API (every node with ``all_nodes``). The API client is made now from ``kubeconfig`` and
    ``context`` (a bad kubeconfig fails before any node is read), unless ``kube`` makes it when first needed.
    ``selector`` and ``namespace`` find the kube-proxy pods (``KubeRunner``'s defaults when not given).
    """
    if local:
        from kptrace.sources.bundle import LocalRunner

        return [(name or os.uname().nodename, LocalRunner)]
    if ssh:
        from kptrace.sources.ssh import SSHRunner, parse_target

        targets = [parse_target(text) for text in ssh]
        return [(name if name and len(ssh) == 1 else t.host,
                 functools.partial(SSHRunner, t, config_path=ssh_config, **ssh_options)) for t in targets]
    from kptrace.sources.kube import KubeRunner, api, node_names

    client = kube
    if client is None:
        core = api(kubeconfig, context)
        client = lambda: core  # noqa: E731
    options: dict[str, Any] = {key: value for key, value in (("selector", selector), ("namespace", namespace)) if value}

    def runner_for(node: str) -> Callable[[], Any]:
        return lambda: KubeRunner(client(), node, **options)

    return [(n, runner_for(n)) for n in (node_names(client()) if all_nodes else nodes)]
