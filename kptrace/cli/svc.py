"""Everything a node's rules say about a Service: entry points, endpoints with their real shares,
masquerading and why, traffic policy, session affinity, and warnings.

QUERY is NAMESPACE/NAME[:PORT], a ClusterIP[:PORT], or a KUBE-SVC-/SVL-/EXT-/FW-/XLB-/SEP- chain.
Services are found by kube-proxy's chain-name hash, so dumps without comments work (give the port name
when the Service's ports are named). With --node-name, the endpoints kube-proxy should program on that
node (from the live API or --cluster-state) are shown beside the node's, with any drift.
"""

from __future__ import annotations

import typer

from kptrace.cli.common import LenientOpt, MaxSizeOpt, OutputFormat, OutputOpt, stdout_console, warn_diagnostics
from kptrace.cli.options import SOURCE_OPTIONS, GraphOpt, HtmlOpt, NodeSource, node_source_options
from kptrace.errors import EXIT_FINDINGS


@node_source_options
def svc(
    query: str = typer.Argument(..., help="NAMESPACE/NAME[:PORT], ClusterIP[:PORT] or a kube-proxy chain name.", show_default=False),
    source: NodeSource = SOURCE_OPTIONS,
    node_name: str = typer.Option(None, "--node-name", help="Compare with the Kubernetes API as this node (adds the expected "
                                  "endpoints and any drift; live API unless --cluster-state).", show_default=False),
    cluster_state: str = typer.Option(None, "--cluster-state", help="Expected state from a file (`kubectl get "
                                      "services,endpointslices,nodes -A -o json`); needs --node-name.", show_default=False),
    kube_proxy_version: str = typer.Option(None, "--kube-proxy-version", help="With --node-name: an older kube-proxy's endpoint "
                                           "selection (MAJOR.MINOR).", show_default=False),
    since: list[str] = typer.Option([], "--since", help="An earlier `iptables-save -c` (or `nft list ruleset` with counters) of the same "
                                    "node (repeatable for IPv6): observed shares from the counters' growth since then.", show_default=False),
    tables: list[str] = typer.Option([], "--conntrack", help="The node's `conntrack -L` (repeatable): show the Service's "
                                     "stale entries (a bundle's own tables are used when it has them).", show_default=False),
    paths: bool = typer.Option(False, "--paths", help="Also show the rule path of every outcome."),
    graph: str = GraphOpt,
    html: str = HtmlOpt,
    strict: bool = typer.Option(False, "--strict", help=f"Exit {EXIT_FINDINGS} when there are warnings."),
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    # The signature is the command's options (typer declarations, not logic); the body below is short.
    if graph or html:
        from kptrace.cli.options import check_picture_tools

        check_picture_tools(graph, output)
    dp = source.load(lenient=lenient, max_size=max_size)
    warn_diagnostics(dp.diagnostics)
    if cluster_state and not node_name and dp.ipvs is None:
        raise typer.BadParameter("--cluster-state needs --node-name: which node's view of the Service to expect", param_hint="--node-name")
    views, drift = _views(dp, query, source, node_name, cluster_state, kube_proxy_version, max_size)
    counters = _counters(dp, views, since, lenient, max_size)
    stale = _stale_by_view(dp, views, tables, source.bundle, lenient)
    if graph or html:
        from kptrace.cli.options import write_pictures
        from kptrace.render.graph import service_graph

        write_pictures(service_graph(views), graph, html,
                       lambda svg, dot: _html(views, dp, svg, dot, drift=drift, counters=counters, stale=stale))
    if graph in ("-", "dot:-", "mmd:-"):
        pass  # stdout holds the graph
    elif output is OutputFormat.json:
        _print_json(views, dp, drift, counters, stale)
    else:
        from kptrace.render.text import render_service

        console = stdout_console()
        for v in views:
            render_service(console, v, show_paths=paths, drift=drift, counters=counters.get(id(v)),
                           stale=stale.get(id(v), []) if stale is not None else None)
        for n in dp.notes:
            console.print(f"[dim]note: {n}[/]")
    if strict and (any(v.warnings for v in views) or (drift is not None and drift.findings)
                   or any(c is not None and c.skewed for c in counters.values())):
        raise typer.Exit(EXIT_FINDINGS)


def _views(dp, query, source: NodeSource, node_name, cluster_state, kube_proxy_version, max_size):
    """The Service's views on the node, and (with --node-name and a cluster state) the drift of just those ports."""
    from kptrace.tracer.services import service_views

    state = drift = None
    if node_name or cluster_state:
        from kptrace.cli.drift import expected_state

        state = expected_state(cluster_state, source.kubeconfig, source.context, max_size)
    if dp.ipvs is not None:
        from kptrace.checks.expected import expected_ports
        from kptrace.tracer.services_ipvs import ipvs_service_views

        node_for = node_name
        if state is None and source.bundle:
            state, node_for = _bundle_cluster_state(source.bundle)
        views = ipvs_service_views(dp, query, state, node_for, expected_ports=expected_ports)
    else:
        views = service_views(dp, query)
    if node_name and state is not None:
        from kptrace.checks.drift import check_node
        from kptrace.checks.selection import profile_for_version

        drift = check_node(dp, state, node_name, profile=profile_for_version(kube_proxy_version),
                           only={v.hash for v in views if v.hash})
    return views, drift


def _counters(dp, views, since, lenient, max_size) -> dict:
    """id(view) -> the shares observed from the counters' growth (since --since's snapshot, or since they were zeroed)."""
    from kptrace.checks.counters import observed_shares

    before = None
    if since:
        from kptrace.cli.common import parse_size
        from kptrace.load import load_dumps

        before = load_dumps(since, lenient=lenient, max_bytes=parse_size(max_size))
    counters = {id(v): observed_shares(dp, v, before) for v in views} if dp.ipvs is None else {}
    if since and not any(counters.values()):
        from kptrace.errors import InputError

        raise InputError("--since: the input has no packet counters to compare",
                         hint="take both snapshots with `iptables-save -c` (or `iptables -L -n -v -x`; nftables mode: "
                                  "kube-proxy's rules with `counter`, listed by `nft list ruleset`)")
    return counters


def _print_json(views, dp, drift, counters, stale) -> None:
    from kptrace.render.json_out import dumps as to_json
    from kptrace.render.json_out import service_json

    out = service_json(views, dp.notes, drift=drift, counters=counters)
    if stale is not None:
        from kptrace.checks.stale import delete_command

        for v, d in zip(views, out["services"]):
            d["stale_conntrack"] = [{"protocol": s.entry.protocol, "src": s.entry.orig_src, "sport": s.entry.orig_sport,
                                     "dst": s.entry.orig_dst, "dport": s.entry.orig_dport, "endpoint": s.endpoint,
                                     "blackholed": s.blackholed, "reason": s.reason, "command": delete_command(s)}
                                    for s in stale.get(id(v), [])]
    typer.echo(to_json(out))


def _html(views, dp, svg, dot, *, drift=None, counters=None, stale=None):
    from kptrace.render.html import service_html

    return service_html(views, svg=svg, dot=dot, notes=dp.notes, drift=drift, counters=counters, stale=stale)


def _stale_by_view(dp, views, tables, bundle, lenient):
    """The views' stale conntrack entries (id(view) -> [Stale]), when a table is given or the bundle has one."""
    from kptrace.cli.conntrack import conntrack_tables, read_tables

    tables = conntrack_tables(tables, bundle)
    if not tables:
        return None
    from kptrace.checks.stale import find_stale

    report = find_stale(dp, *read_tables(tables, lenient))
    out: dict[int, list] = {}
    for v in views:
        dsts = {(e.address, e.port) for e in v.entry_points}
        out[id(v)] = [s for s in report.stale if s.entry.family == v.family and (
            (s.service is not None and s.service == v.name and s.entry.protocol == v.protocol)
            or (s.service is None and (s.entry.orig_dst, s.entry.orig_dport) in dsts))]
    return out


def _bundle_cluster_state(bundle: str):
    """The cluster.json a bundle collected through the Kubernetes API carries (names for IPVS mode), and its node."""
    import json
    import os

    path = os.path.join(bundle, "cluster.json")
    if not os.path.isfile(path):
        return None, None
    from kptrace.parsers.cluster_state import parse_cluster_state

    with open(path) as f:
        state = parse_cluster_state(f.read(), path)
    try:
        with open(os.path.join(bundle, "meta.json")) as f:
            node = json.load(f).get("node")
    except (OSError, ValueError):
        node = None
    return state, node
