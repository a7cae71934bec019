"""Stale connection tracking: the conntrack entries the current rules no longer explain.

For every entry whose original destination is a Service entry point of the node and that was DNATed
(any mode: iptables, IPVS, nftables), the endpoint it still goes to is compared with those the entry point
leads to now from the entry's origin (and, with --cluster-state and --node-name, with the Service's
endpoints in the API). Stale UDP flows and unanswered connections are blackholed now; established TCP
connections only keep going to the old endpoint. The `conntrack -D` command that would clear each group is
printed, never run: kptrace does not change a node. Exit 0: none stale; 1: stale entries found.
"""

from __future__ import annotations

import os

import typer

from kptrace.cli.common import (
    BundleOpt,
    DumpOpt,
    IpsetOpt,
    IpvsOpt,
    LenientOpt,
    MaxSizeOpt,
    NodeIpOpt,
    OutputFormat,
    OutputOpt,
    load_input,
    stdout_console,
    warn_diagnostics,
)
from kptrace.errors import EXIT_FINDINGS

#: the files a bundle keeps `conntrack -L` (IPv4) and `conntrack -L -f ipv6` in
BUNDLE_FILES = ("conntrack.txt", "conntrack6.txt")


def conntrack_tables(tables: list[str], bundle: str | None) -> list[str]:
    """The tables to read: those given, else the bundle's."""
    if tables:
        return list(tables)
    if bundle:
        return [os.path.join(bundle, f) for f in BUNDLE_FILES if os.path.isfile(os.path.join(bundle, f))]
    return []


def read_tables(tables: list[str], lenient: bool) -> list:
    """A reader of each table (opened now: a missing file is an error before anything is read), for
    :func:`~kptrace.checks.stale.find_stale`, which streams them."""
    from kptrace.parsers.conntrack import read_conntrack

    if tables.count("-") > 1:
        raise typer.BadParameter("- (stdin) can be given once", param_hint="--conntrack")
    return [read_conntrack(t, lenient=lenient) for t in tables]


def conntrack(
    tables: list[str] = typer.Option([], "--conntrack", help="`conntrack -L` output (also -o extended, -o xml, or "
                                     "/proc/net/nf_conntrack); - for stdin; repeatable (conntrack -L -f ipv6 is another "
                                     "table). A bundle's own are used when not given.", show_default=False),
    dumps: list[str] = DumpOpt,
    ipvs: str = IpvsOpt,
    ipset: str = IpsetOpt,
    bundle: str = BundleOpt,
    node_ips: list[str] = NodeIpOpt,
    cluster_state: str = typer.Option(None, "--cluster-state", help="Also compare with the Services' endpoints in this "
                                      "cluster state (needs --node-name).", show_default=False),
    node_name: str | None = typer.Option(None, "--node-name", help="The node the table is from (for --cluster-state; a bundle says "
                                  "it itself).", show_default=False),
    service_cidr: list[str] = typer.Option([], "--service-cidr", help="The Service CIDR(s): entries to a ClusterIP no Service "
                                           "has now are stale (nftables mode's rules say it themselves).", show_default=False),
    lenient: bool = LenientOpt,
    max_size: str = MaxSizeOpt,
    output: OutputFormat = OutputOpt,
) -> None:
    from kptrace.checks.stale import find_stale

    if "-" in tables and "-" in [*dumps, ipvs, ipset]:
        raise typer.BadParameter("- (stdin) is given for the rules and the table: it can be read only once; give one "
                                 "of them as a file", param_hint="--conntrack")
    dp = load_input(dumps, bundle, False, node_ips, lenient=lenient, max_size=max_size, ipvs=ipvs, ipset=ipset)
    warn_diagnostics(dp.diagnostics)
    tables = conntrack_tables(tables, bundle)
    if not tables:
        raise typer.BadParameter("give the node's conntrack table: --conntrack FILE (`conntrack -L` output; - for stdin)"
                                 + (f"; the bundle {bundle} has none (collected before kptrace saved it?)" if bundle else ""),
                                 param_hint="--conntrack")
    for c in service_cidr:
        from kptrace.model.addr import parse_cidr

        try:
            parse_cidr(c)
        except ValueError:
            raise typer.BadParameter(f"{c!r} is not a CIDR", param_hint="--service-cidr") from None
    expected = None
    if cluster_state and not node_name and bundle:
        import json

        try:
            with open(os.path.join(bundle, "meta.json")) as f:
                node_name = json.load(f).get("node")
        except (OSError, ValueError):
            node_name = None
    if cluster_state:
        if not node_name:
            raise typer.BadParameter("--cluster-state needs --node-name: which node the table is from", param_hint="--node-name")
        expected = _expected_endpoints(cluster_state, node_name, dp, max_size)
    report = find_stale(dp, *read_tables(tables, lenient), expected=expected, service_cidrs=service_cidr)
    table = ", ".join(tables)
    if output is OutputFormat.json:
        from kptrace.render.json_out import dumps as to_json
        from kptrace.render.stale import stale_json

        typer.echo(to_json(stale_json(report, table)))
    else:
        from kptrace.render.stale import render_stale

        render_stale(stdout_console(), report, table)
    if report.stale:
        raise typer.Exit(EXIT_FINDINGS)


def _expected_endpoints(path: str, node: str, dp, max_size) -> dict[str, set[str]]:
    from kptrace.checks.expected import expected_ports
    from kptrace.cli.drift import expected_state

    state = expected_state(path, None, None, max_size)
    out: dict[str, set[str]] = {}
    for fam in sorted(dp.rulesets):
        for e in expected_ports(state, node, fam)[0]:
            eps = {x.address for x in (e.cluster_chain_endpoints or ())} | {x.address for x in (e.local_chain_endpoints or ())}
            out.setdefault(e.spn, set()).update(eps)
    return out
