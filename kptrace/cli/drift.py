"""Check nodes' data planes against the Kubernetes API: what kube-proxy should program on each node
(Services, EndpointSlices and Nodes, with kube-proxy's own endpoint selection) versus what the node's
rules hold. Findings have stable kinds; exit 1 on drift (see --fail-on), 3/5 on errors, 6 when some
nodes could not be read (the others are still checked).

Expected state: the live API (kubeconfig, --context, or in-cluster; read-only: list Services,
EndpointSlices, Nodes) or --cluster-state FILE (`kubectl get services,endpointslices,nodes -A -o json`,
JSON or YAML).
"""

from __future__ import annotations

import os
import tempfile

import typer

from kptrace.cli.common import (
    ContextOpt,
    KubeconfigOpt,
    LenientOpt,
    MaxSizeOpt,
    NodeIpOpt,
    OutputFormat,
    OutputOpt,
    SshConfigOpt,
    parse_size,
    stderr_console,
    stdout_console,
    warn_diagnostics,
)
from kptrace.cli.options import HtmlOpt
from kptrace.errors import EXIT_ENVIRONMENT, EXIT_FINDINGS, EXIT_PARTIAL, InputError, KptraceError
from kptrace.sources.runners import runner_targets


def drift(
    dumps: list[str] = typer.Option([], "--dump", help="iptables-save / ip6tables-save output of one node (repeatable for both "
                                    "families; - for stdin). Needs --node-name.", show_default=False),
    ipvs: str = typer.Option(None, "--ipvs", help="IPVS mode: the node's `ipvsadm -Ln` / `ipvsadm-save -n` output (with --dump or alone).",
                             show_default=False),
    ipset: str = typer.Option(None, "--ipset", help="IPVS mode: the node's `ipset save` / `ipset list` output.", show_default=False),
    node_name: str = typer.Option(None, "--node-name", help="The Kubernetes node the --dump / --local / --ssh rules are from.",
                                  show_default=False),
    bundles: list[str] = typer.Option([], "--bundle", help="A node bundle (from `kptrace collect`), or a directory of them "
                                      "(repeatable). The node name comes from the bundle.", show_default=False),
    local: bool = typer.Option(False, "--local", help="Check this machine (root or sudo -n); node name: --node-name or the hostname."),
    ssh: list[str] = typer.Option([], "--ssh", help="[user@]host[:port] to read over SSH (repeatable).", show_default=False),
    nodes: list[str] = typer.Option([], "--node", help="A node to read through the Kubernetes API (exec in its kube-proxy pod; "
                                    "repeatable).", show_default=False),
    all_nodes: bool = typer.Option(False, "--all-nodes", help="Every node of the cluster, through the Kubernetes API."),
    cluster_state: str = typer.Option(None, "--cluster-state", help="Expected state from a file instead of the live API: "
                                      "`kubectl get services,endpointslices,nodes -A -o json` (or -o yaml); - for stdin.",
                                      show_default=False),
    kubeconfig: str = KubeconfigOpt,
    context: str = ContextOpt,
    kube_proxy_version: str = typer.Option(None, "--kube-proxy-version", help="Select an older kube-proxy's endpoint selection "
                                           "(MAJOR.MINOR; default: current behaviour).", show_default=False),
    ignore: list[str] = typer.Option([], "--ignore", help="Skip a namespace, NAMESPACE/NAME or NAMESPACE/NAME:PORT (globs; "
                                     "repeatable).", show_default=False),
    fail_on: str = typer.Option("warning", "--fail-on", help="Exit 1 when a finding is at least this severe: warning (any "
                                "finding), error, never; or a comma-separated list of kinds."),
    junit: str = typer.Option(None, "--junit", help="Also write a JUnit XML report (one test case per node x Service port).",
                              show_default=False),
    html: str = HtmlOpt,
    node_ips: list[str] = NodeIpOpt,
    conntrack_tables: list[str] = typer.Option([], "--conntrack", help="With --dump: the node's `conntrack -L` (repeatable); "
                                               "stale entries become stale-conntrack findings (bundles carry their own).",
                                               show_default=False),
    selector: str = typer.Option("k8s-app=kube-proxy", "--kube-proxy-selector", help="Labels of the kube-proxy pods."),
    ssh_config: str = SshConfigOpt,
    parallel: int = typer.Option(16, "--parallel", min=1, max=256, help="Nodes read at once (--ssh, --node, --all-nodes)."),
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    # The signature is the command's options (typer declarations, not logic); the body below is short.
    from kptrace.checks.drift import KINDS, SEVERITY
    from kptrace.checks.selection import profile_for_version

    dumps = list(dumps) + [f for f in (ipvs, ipset) if f]
    _one_input(dumps, bundles, local, ssh, nodes, all_nodes, node_name)
    fail_kinds = _fail_on(fail_on, KINDS, SEVERITY)
    profile = profile_for_version(kube_proxy_version)
    state = expected_state(cluster_state, kubeconfig, context, max_size)
    if conntrack_tables and not dumps:
        raise typer.BadParameter("--conntrack goes with --dump (one node); bundles carry their own tables", param_hint="--conntrack")
    tmp = None
    try:
        if not dumps and not bundles:
            tmp = tempfile.TemporaryDirectory(prefix="kptrace-drift-")
        collect = lambda out_dir: _collect(local, ssh, nodes, all_nodes, node_name, kubeconfig, context,  # noqa: E731
                                           selector, ssh_config, parallel, out_dir)
        targets, bundle_paths, errors = _targets(dumps, bundles, node_name, node_ips, lenient, max_size, tmp, collect)
        reports = _check_targets(targets, errors, state, profile, ignore, conntrack_tables, bundle_paths, lenient)
    finally:
        if tmp is not None:
            tmp.cleanup()
    _write_reports(reports, errors, state, profile, output, junit, html)
    if errors:
        raise typer.Exit(EXIT_PARTIAL if reports else EXIT_ENVIRONMENT)
    if any(f.kind in fail_kinds for r in reports for f in r.findings):
        raise typer.Exit(EXIT_FINDINGS)


def _one_input(dumps, bundles, local, ssh, nodes, all_nodes, node_name) -> None:
    sources = sum(map(bool, (dumps, bundles, local, ssh, nodes or all_nodes)))
    if sources == 0:
        raise typer.BadParameter("say which nodes to check: --dump FILE --node-name NAME, --bundle DIR, --local, --ssh HOST, "
                                 "--node NAME or --all-nodes", param_hint="--dump")
    if sources > 1:
        raise typer.BadParameter("give one kind of input: --dump, --bundle, --local, --ssh, or --node/--all-nodes", param_hint="--dump")
    if dumps and not node_name:
        raise typer.BadParameter("which node are these rules from? give --node-name NAME (endpoints on that node count as local)",
                                 param_hint="--node-name")


def _targets(dumps, bundles, node_name, node_ips, lenient, max_size, tmp, collect):
    """The nodes to check, each as (node, loader); the bundle of each node that has one; the nodes that could not be read."""
    errors: list[tuple[str, str]] = []
    bundle_paths: dict[str, str] = {}
    targets: list[tuple[str, object]] = []  # (node, loader)
    if dumps:
        from kptrace.load import load_dumps

        targets.append((node_name, lambda: load_dumps(dumps, node_ips=node_ips, lenient=lenient, max_bytes=parse_size(max_size))))
    elif bundles:
        for path in _bundle_dirs(bundles):
            bundle_paths[_bundle_node(path)] = path
            targets.append((_bundle_node(path), lambda path=path: _load_bundle(path, node_ips, lenient)))
    else:
        for name, path, error in collect(tmp.name):
            if error:
                errors.append((name, error))
            else:
                bundle_paths[name] = path
                targets.append((name, lambda path=path: _load_bundle(path, node_ips, lenient)))
    return targets, bundle_paths, errors


def _check_targets(targets, errors, state, profile, ignore, conntrack_tables, bundle_paths, lenient) -> list:
    """Load and check each node in turn (one data plane in memory at a time); a node that fails to load joins ``errors``."""
    from kptrace.checks.drift import check_node, select_findings

    reports = []
    for name, load in targets:
        try:
            dp = load()
        except KptraceError as e:
            if len(targets) == 1 and not errors:
                raise
            errors.append((name, e.render()))
            continue
        warn_diagnostics(dp.diagnostics)
        report = check_node(dp, state, name, profile=profile)
        _add_stale(report, dp, name, state, profile, conntrack_tables, bundle_paths.get(name), lenient)
        select_findings(report, ignore)
        reports.append(report)
        del dp
    return reports


def _write_reports(reports, errors, state, profile, output: OutputFormat, junit: str | None, html: str | None) -> None:
    if junit:
        from kptrace.render.drift import drift_junit

        with open(junit, "w") as f:
            f.write(drift_junit(reports, errors))
    if html:
        from kptrace.render.html import drift_html, write_html

        write_html(html, drift_html(reports, errors, cluster_state=state.source, kube_proxy=profile.version))
    if output is OutputFormat.json:
        from kptrace.render.drift import drift_json
        from kptrace.render.json_out import dumps as to_json

        doc = drift_json(reports, errors, cluster_state=state.source, kube_proxy=profile.version)
        typer.echo(to_json(doc, compact=len(doc["services"]) > 2000))  # a large cluster's report: one line
    else:
        from kptrace.render.drift import render_drift

        render_drift(stdout_console(), reports, errors)
        if junit:
            stderr_console().print(f"JUnit report written to {junit}", highlight=False)


def _fail_on(text: str, kinds, severity) -> set[str]:
    t = text.strip().lower()
    if t == "never":
        return set()
    if t == "warning":
        return set(kinds)
    if t == "error":
        return {k for k in kinds if severity[k] == "error"}
    wanted = {k.strip() for k in t.split(",") if k.strip()}
    unknown = wanted - set(kinds)
    if unknown:
        raise typer.BadParameter(f"unknown finding kind {', '.join(sorted(unknown))}; give warning, error, never, or kinds from: "
                                 + ", ".join(kinds), param_hint="--fail-on")
    return wanted


def expected_state(path: str | None, kubeconfig: str | None, context: str | None, max_size: str | None):
    from kptrace.parsers.cluster_state import parse_cluster_state, state_from_objects

    if path:
        from kptrace.parsers.cluster_state import COMMAND
        from kptrace.sources.files import read_source

        src = read_source(path, max_bytes=parse_size(max_size), tool=COMMAND)
        return parse_cluster_state(src.text, src.name)
    from kptrace.sources.kube import fetch_cluster_state

    obj = fetch_cluster_state(kubeconfig, context)
    return state_from_objects([obj], "the Kubernetes API")


def _bundle_dirs(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        if os.path.isfile(os.path.join(p, "meta.json")):
            out.append(p)
            continue
        subs = sorted(os.path.join(p, d) for d in os.listdir(p) if os.path.isfile(os.path.join(p, d, "meta.json"))) \
            if os.path.isdir(p) else []
        if not subs:
            raise InputError(f"{p}: neither a node bundle nor a directory of bundles (no meta.json)",
                             hint="bundles are written by `kptrace collect -o DIR`; give DIR or DIR/<node>")
        out.extend(subs)
    return out


def _bundle_node(path: str) -> str:
    import json

    try:
        with open(os.path.join(path, "meta.json")) as f:
            return json.load(f).get("node") or os.path.basename(os.path.normpath(path))
    except (OSError, ValueError):
        return os.path.basename(os.path.normpath(path))


def _add_stale(report, dp, node, state, profile, tables, bundle, lenient) -> None:
    """Stale conntrack entries as findings, when the node's table is known (--conntrack, or the bundle's)."""
    from kptrace.cli.conntrack import conntrack_tables, read_tables

    tables = conntrack_tables(tables or [], bundle)
    if not tables:
        return
    from kptrace.checks.expected import expected_ports
    from kptrace.checks.stale import find_stale, stale_findings

    expected: dict[str, set[str]] = {}
    for fam in sorted(dp.rulesets):
        for e in expected_ports(state, node, fam, profile=profile)[0]:
            eps = {x.address for x in (e.cluster_chain_endpoints or ())} | {x.address for x in (e.local_chain_endpoints or ())}
            expected.setdefault(e.spn, set()).update(eps)
    stale = find_stale(dp, *read_tables(tables, lenient), expected=expected)
    report.findings.extend(stale_findings(stale, node))
    report.notes.append(f"conntrack: {stale.entries} entries read ({', '.join(tables)}), {stale.service_entries} to Service "
                        f"entry points, {len(stale.stale)} stale")


def _load_bundle(path: str, node_ips, lenient: bool):
    from kptrace.load import load_bundle

    return load_bundle(path, node_ips=node_ips, lenient=lenient)


def _collect(local, ssh, nodes, all_nodes, node_name, kubeconfig, context, selector, ssh_config, parallel, out_dir):
    """Read the nodes into bundles in ``out_dir``; yields (node, path, error)."""
    from kptrace.sources.bundle import collect_many

    targets = runner_targets(local=local, ssh=ssh, nodes=nodes, all_nodes=all_nodes, name=node_name, kubeconfig=kubeconfig,
                             context=context, selector=selector, ssh_config=ssh_config)
    for r in collect_many(targets, out_dir, parallel=parallel):
        for note in r.notes:
            stderr_console().print(f"note: {r.name}: {note}", highlight=False, markup=False, soft_wrap=True)
        yield r.name, r.path, r.error
