"""Options and helpers shared by the commands."""

from __future__ import annotations

import functools
from enum import Enum

import typer
from rich.console import Console

from kptrace.sources.files import DEFAULT_MAX_BYTES
from kptrace.sources.runners import runner_targets

__all__ = ["PROTOCOLS", "OutputFormat", "ProtoOpt", "parse_size", "stderr_console", "stdout_console"]


class OutputFormat(str, Enum):
    rich = "rich"
    wide = "wide"  # rich, with every table row on one line, nothing wrapped
    json = "json"


@functools.cache
def stderr_console() -> Console:
    return Console(stderr=True)


@functools.cache
def stdout_console() -> Console:
    return Console()


def parse_size(text: str | None) -> int:
    """``--max-size``: bytes, or a number with K, M or G.

    >>> parse_size("10M"), parse_size("512k"), parse_size(None) == DEFAULT_MAX_BYTES
    (10485760, 524288, True)
    """
    if not text:
        return DEFAULT_MAX_BYTES
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError:
        value = -1
    if not 0 < value < 1 << 50:  # also refuses nan and inf, which float() takes
        raise typer.BadParameter(f"{text!r} is not a size: give bytes, or a number with K, M or G (e.g. 1G)",
                                 param_hint="--max-size")
    return int(value)


# Command-line values are checked when typer reads them, so a bad one is a usage error (exit 2) before
# any input is read, whichever command it is given to.

def _check_size(value: str | None) -> str | None:
    parse_size(value)
    return value


def _check_node_ips(values: list[str]) -> list[str]:
    from kptrace.model.addr import parse_addr

    for v in values or ():
        try:
            parse_addr(v)
        except ValueError:
            raise typer.BadParameter(f"{v!r} is not an IP address: give each node address as --node-ip 192.168.0.2",
                                     param_hint="--node-ip") from None
    return values


#: What --proto takes: the protocols kube-proxy programs Services for. ICMP has no ports, so no Service
#: (and no --dst IP:PORT) can be traced with it.
PROTOCOLS = ("tcp", "udp", "sctp")


def _check_proto(value: str) -> str:
    p = (value or "").lower()
    if p not in PROTOCOLS:
        extra = " (ICMP has no ports: kube-proxy's rules only rewrite TCP, UDP and SCTP)" if p.startswith("icmp") else ""
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(PROTOCOLS)}{extra}", param_hint="--proto")
    return p


ProtoOpt = typer.Option("tcp", "--proto", help="tcp, udp or sctp.", callback=_check_proto)


DumpOpt = typer.Option([], "--dump", help="iptables-save / ip6tables-save output of one node (repeatable; - for stdin); "
                       "ipvsadm and ipset output are recognised too.", show_default=False)
IpvsOpt = typer.Option(None, "--ipvs", help="IPVS mode: `ipvsadm -Ln` (any variant) or `ipvsadm-save -n` output of the node.",
                       show_default=False)
IpsetOpt = typer.Option(None, "--ipset", help="IPVS mode: `ipset save` or `ipset list` output of the node (what -m set reads).",
                        show_default=False)
NodeIpOpt = typer.Option([], "--node-ip", help="An address of the node (repeatable); decides -m addrtype LOCAL.",
                         show_default=False, callback=_check_node_ips)
LenientOpt = typer.Option(False, "--lenient", help="Keep going past errors in the input (they become warnings).")
MaxSizeOpt = typer.Option(None, "--max-size", help="Largest input to read (default 256M).", show_default=False,
                          callback=_check_size)


def _output_chosen(value: OutputFormat) -> OutputFormat:
    # What the renderers read from the console (kptrace.render.layout): soft_wrap means no width limit,
    # for -o wide and for a pipe or a file, whose lines are never wrapped.
    console = stdout_console()
    console.soft_wrap = OutputFormat(value) is OutputFormat.wide or not console.is_terminal
    return value


OutputOpt = typer.Option(OutputFormat.rich, "--output", "-o", callback=_output_chosen,
                         help="rich (default; plain text without colour or boxes when piped), wide (rich, every table row on "
                              "one line) or json.")


def warn_diagnostics(diagnostics, limit: int = 5) -> None:
    """Warnings from reading the input go to stderr, briefly; `kptrace parse` shows them all."""
    import re
    from dataclasses import replace

    from kptrace.render.text import render_diagnostics

    # An error here was read on (--lenient; else it would have stopped the command): said as a warning, and a hint
    # to pass --lenient is dropped.
    warnings = [d if d.severity != "error" else
                replace(d, severity="warning", message=f"{d.message} (read on: --lenient)",
                        hint=re.sub(r",? or pass --lenient[^;.]*|pass --lenient[^;.]*", "", d.hint).strip(" ;,"))
                for d in diagnostics if d.severity != "note"]
    if warnings:
        render_diagnostics(stderr_console(), warnings, limit=limit)


def parse_dst(text: str) -> tuple[int, int, int]:
    """--dst IP:PORT as (family, address, port), or a usage error that says what is wrong with it."""
    from kptrace.model.addr import parse_endpoint

    try:
        fam, addr, port = parse_endpoint(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not IP:PORT (IPv6 as [addr]:port)", param_hint="--dst") from None
    if port is None:
        raise typer.BadParameter(f"{text!r} has no port: give IP:PORT (IPv6 as [addr]:port)", param_hint="--dst")
    if not 1 <= port <= 65535:
        raise typer.BadParameter(f"{text!r}: port {port} is out of range (1-65535)", param_hint="--dst")
    return fam, addr, port


def require_dumps(dumps: list[str]) -> None:
    if not dumps:
        raise typer.BadParameter("give the node's rules with --dump FILE (iptables-save output; - for stdin)", param_hint="--dump")


BundleOpt = typer.Option(None, "--bundle", help="A node bundle directory (from `kptrace collect`); its addresses and routes are used.",
                         show_default=False)
LocalOpt = typer.Option(False, "--local", help="Read this machine's own rules, addresses and routes (root or sudo -n).")
SshOpt = typer.Option(None, "--ssh", help="Read a node's rules over SSH: [user@]host[:port] (~/.ssh/config honoured).",
                      show_default=False)
SshConfigOpt = typer.Option(None, "--ssh-config", help="SSH config file (default ~/.ssh/config).", show_default=False)
NodeOpt = typer.Option(None, "--node", help="Read a node's rules through the Kubernetes API (exec in its kube-proxy pod).",
                       show_default=False)
KubeconfigOpt = typer.Option(None, "--kubeconfig", help="Kubeconfig file (default $KUBECONFIG or ~/.kube/config).", show_default=False)
ContextOpt = typer.Option(None, "--context", help="Kubeconfig context.", show_default=False)


def load_input(dumps: list[str], bundle: str | None, local: bool, node_ips: list[str], *, lenient: bool, max_size: str | None,
               full: bool = False, ssh: str | None = None, ssh_config: str | None = None, node: str | None = None,
               kubeconfig: str | None = None, context: str | None = None, ipvs: str | None = None, ipset: str | None = None):
    """The data plane from exactly one of --dump (with --ipvs / --ipset), --bundle, --local, --ssh, --node."""
    dumps = list(dumps) + [f for f in (ipvs, ipset) if f]
    given = sum(bool(x) for x in (dumps, bundle, local, ssh, node))
    if given == 0:
        raise typer.BadParameter("give the node's rules: --dump FILE (iptables-save output; - for stdin), --bundle DIR, --local, "
                                 "--ssh HOST or --node NAME", param_hint="--dump")
    if given > 1:
        raise typer.BadParameter("give one of --dump, --bundle, --local, --ssh, --node", param_hint="--dump")
    from kptrace.load import load_bundle, load_dumps

    if dumps:
        expect = {f: fmt for f, fmt in ((ipvs, "ipvsadm"), (ipset, "ipset")) if f}
        return load_dumps(dumps, node_ips=node_ips, lenient=lenient, full=full, max_bytes=parse_size(max_size), expect=expect)
    if bundle:
        return load_bundle(bundle, node_ips=node_ips, lenient=lenient, full=full)

    from kptrace.sources.bundle import collect

    [(name, make_runner)] = runner_targets(local=local, ssh=[ssh] if ssh else [], nodes=[node] if node else [],
                                           kubeconfig=kubeconfig, context=context, ssh_config=ssh_config)
    runner = make_runner()
    try:
        b = collect(runner, None if local else name)  # this machine: the name its bundle records (hostname)
    finally:
        getattr(runner, "close", lambda: None)()
    for note in b.notes:
        stderr_console().print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    return load_bundle(bundle=b, node_ips=node_ips, lenient=lenient, full=full)
