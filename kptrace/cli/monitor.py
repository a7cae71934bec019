"""Check nodes' data planes against the Kubernetes API all the time, and expose the findings as
Prometheus metrics (/metrics; /healthz and /readyz for probes; JSON log lines on stderr).

The cluster state comes from the watch API (Services, EndpointSlices, Nodes: list, then watch with
bookmarks; relist on 410 Gone; backoff on errors) or from --cluster-state FILE, read again when it
changes. Rules: --local (in a DaemonSet pod: this node), --node/--all-nodes (exec in the kube-proxy pods:
one Deployment for the cluster), --ssh, or files (--dump, --bundle: checked again when they change).
Every node is checked each --interval, and --debounce seconds after a change that matters to kube-proxy.
Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import os

import typer

from kptrace.cli.common import ContextOpt, KubeconfigOpt, LenientOpt, MaxSizeOpt, NodeIpOpt, SshConfigOpt, parse_size


def monitor(
    dumps: list[str] = typer.Option([], "--dump", help="iptables-save / ip6tables-save / nft output of one node (repeatable); "
                                    "checked again when the files change. Needs --node-name.", show_default=False),
    ipvs: str = typer.Option(None, "--ipvs", help="IPVS mode: the node's `ipvsadm -Ln` output (with --dump or alone).",
                             show_default=False),
    ipset: str = typer.Option(None, "--ipset", help="IPVS mode: the node's `ipset save` output.", show_default=False),
    node_name: str = typer.Option(None, "--node-name", envvar="NODE_NAME", help="The node the --dump / --local rules are "
                                  "from (default for --local: $NODE_NAME, else the hostname).", show_default=False),
    bundles: list[str] = typer.Option([], "--bundle", help="A node bundle or a directory of them (repeatable; new bundles "
                                      "are picked up).", show_default=False),
    local: bool = typer.Option(False, "--local", help="Read this machine's rules (the DaemonSet; needs CAP_NET_ADMIN)."),
    ssh: list[str] = typer.Option([], "--ssh", help="[user@]host[:port] to read over SSH (repeatable).", show_default=False),
    nodes: list[str] = typer.Option([], "--node", help="A node to read through its kube-proxy pod (repeatable).", show_default=False),
    all_nodes: bool = typer.Option(False, "--all-nodes", help="Every node of the cluster, through the kube-proxy pods "
                                   "(the Deployment); nodes that join or leave are followed."),
    cluster_state: str = typer.Option(None, "--cluster-state", help="Expected state from a file instead of the live API "
                                      "(`kubectl get services,endpointslices,nodes -A -o json`); read again when it changes.",
                                      show_default=False),
    kubeconfig: str = KubeconfigOpt,
    context: str = ContextOpt,
    listen: str = typer.Option("0.0.0.0:9633", "--listen", help="HOST:PORT for /metrics, /healthz and /readyz."),
    interval: float = typer.Option(60.0, "--interval", min=0.1, help="Seconds between full rounds of checks."),
    debounce: float = typer.Option(5.0, "--debounce", min=0.0, help="Seconds to wait after a relevant cluster change "
                                   "before checking (kube-proxy needs a moment to sync)."),
    poll: float = typer.Option(1.0, "--poll", min=0.05, help="Seconds between looks at rule and state files."),
    watch_timeout: int = typer.Option(300, "--watch-timeout", min=1, help="Seconds the API server keeps one watch open."),
    api_timeout: float = typer.Option(30.0, "--api-timeout", min=0.1, help="Seconds to wait for the API server to answer."),
    backoff_max: float = typer.Option(30.0, "--backoff-max", min=0.1, help="Longest wait between attempts after API errors."),
    kube_proxy_version: str = typer.Option(None, "--kube-proxy-version", help="Select an older kube-proxy's endpoint "
                                           "selection (MAJOR.MINOR).", show_default=False),
    ignore: list[str] = typer.Option([], "--ignore", help="Skip a namespace, NAMESPACE/NAME or NAMESPACE/NAME:PORT (globs; "
                                     "repeatable).", show_default=False),
    node_ips: list[str] = NodeIpOpt,
    selector: str = typer.Option("k8s-app=kube-proxy", "--kube-proxy-selector", help="Labels of the kube-proxy pods."),
    namespace: str = typer.Option("kube-system", "--kube-proxy-namespace", help="Namespace of the kube-proxy pods."),
    ssh_config: str = SshConfigOpt,
    parallel: int = typer.Option(16, "--parallel", min=1, max=256, help="Nodes read at once (--ssh, --node, --all-nodes)."),
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    from kptrace.checks.selection import profile_for_version
    from kptrace.monitor.rules import RuleSource
    from kptrace.monitor.run import MonitorOptions, run

    dumps = list(dumps) + [f for f in (ipvs, ipset) if f]
    _check_options(dumps, bundles, local, ssh, nodes, all_nodes, node_name, log_level, listen)
    kube = _lazy_api(kubeconfig, context) if nodes or all_nodes else None
    # One node's rules (the DaemonSet, a dump): only that Node is watched. Every node's (--all-nodes, bundles): all.
    only = rules_node = node_name or (os.environ.get("NODE_NAME") or os.uname().nodename if local else None)
    if nodes and len(nodes) == 1 and not all_nodes:
        only = nodes[0]
    elif not (dumps or local):
        only = None
    rules = RuleSource(dumps, list(bundles), local, list(ssh), list(nodes), all_nodes,
                       rules_node, list(node_ips), lenient,
                       parse_size(max_size), selector, namespace, ssh_config, kube)
    run(MonitorOptions(rules, cluster_state=cluster_state, kubeconfig=kubeconfig, context=context, listen=listen,
                       interval=interval, debounce=debounce, poll=poll, watch_timeout=watch_timeout, api_timeout=api_timeout,
                       backoff_max=backoff_max, parallel=parallel, profile=profile_for_version(kube_proxy_version),
                       ignore=list(ignore), log_level=log_level, max_bytes=parse_size(max_size), only_node=only))


def _check_options(dumps, bundles, local, ssh, nodes, all_nodes, node_name, log_level: str, listen: str) -> None:
    sources = sum(map(bool, (dumps, bundles, local, ssh, nodes or all_nodes)))
    if sources != 1:
        raise typer.BadParameter("give one kind of rule input: --dump, --bundle, --local, --ssh, or --node/--all-nodes",
                                 param_hint="--dump")
    if "-" in dumps:
        raise typer.BadParameter("the monitor reads files again when they change: stdin cannot be re-read", param_hint="--dump")
    if dumps and not node_name:
        raise typer.BadParameter("which node are these rules from? give --node-name NAME", param_hint="--node-name")
    if log_level not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter("debug, info, warning or error", param_hint="--log-level")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"{listen!r}: give HOST:PORT (0.0.0.0:9633, [::]:9633, 127.0.0.1:0)", param_hint="--listen")


def _lazy_api(kubeconfig: str | None, context: str | None):
    """The Kubernetes API client, made on first use (the rule source calls it when it reads a node through its pod)."""
    cache: list = []

    def kube():
        if not cache:
            from kptrace.sources.kube import api

            cache.append(api(kubeconfig, context))
        return cache[0]

    return kube
