"""Options that several commands take as one group, defined once.

``packet``, ``svc`` and ``node`` read one node's data plane from the same eleven options (--dump, --ipvs,
--ipset, --bundle, --local, --ssh, --ssh-config, --node, --kubeconfig, --context, --node-ip). Each command
declares a single ``source: NodeSource`` parameter and :func:`node_source_options` puts the eleven options
into its signature (typer reads the signature), so the options, their help and their order are written
once here and the commands stay thin.

``--graph FILE`` is also here: the picture's format comes from the file's extension.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable, Optional

import typer

from kptrace.cli.common import (
    BundleOpt,
    ContextOpt,
    DumpOpt,
    IpsetOpt,
    IpvsOpt,
    KubeconfigOpt,
    LocalOpt,
    NodeIpOpt,
    NodeOpt,
    SshConfigOpt,
    SshOpt,
)

__all__ = [
    "GRAPH_HELP",
    "GraphOpt",
    "HtmlOpt",
    "NodeSource",
    "check_graph",
    "check_html",
    "check_picture_tools",
    "node_source_options",
    "SOURCE_OPTIONS",
    "write_pictures",
]


@dataclass(frozen=True, slots=True)
class NodeSource:
    """Where one node's data plane comes from, as the command line gave it."""

    dumps: tuple[str, ...] = ()
    ipvs: str | None = None
    ipset: str | None = None
    bundle: str | None = None
    local: bool = False
    ssh: str | None = None
    ssh_config: str | None = None
    node: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    node_ips: tuple[str, ...] = ()

    def load(self, *, lenient: bool, max_size: str | None, full: bool = False):
        """The data plane from exactly one of --dump (with --ipvs / --ipset), --bundle, --local, --ssh, --node."""
        from kptrace.cli.common import load_input

        return load_input(
            list(self.dumps),
            self.bundle,
            self.local,
            list(self.node_ips),
            lenient=lenient,
            max_size=max_size,
            full=full,
            ssh=self.ssh,
            ssh_config=self.ssh_config,
            node=self.node,
            kubeconfig=self.kubeconfig,
            context=self.context,
            ipvs=self.ipvs,
            ipset=self.ipset,
        )


#: the default a command declares for its ``source`` parameter (which :func:`node_source_options` replaces)
SOURCE_OPTIONS = NodeSource()

# (parameter, annotation, option): the order is the order of --help
_SOURCE_OPTIONS: tuple[tuple[str, object, object], ...] = (
    ("dumps", list[str], DumpOpt),
    ("ipvs", Optional[str], IpvsOpt),
    ("ipset", Optional[str], IpsetOpt),
    ("bundle", Optional[str], BundleOpt),
    ("local", bool, LocalOpt),
    ("ssh", Optional[str], SshOpt),
    ("ssh_config", Optional[str], SshConfigOpt),
    ("node", Optional[str], NodeOpt),
    ("kubeconfig", Optional[str], KubeconfigOpt),
    ("context", Optional[str], ContextOpt),
    ("node_ips", list[str], NodeIpOpt),
)


def node_source_options(command: Callable) -> Callable:
    """Replace ``command``'s ``source: NodeSource`` parameter by the eleven source options (after its
    arguments and required options, before the rest); the command receives them as one :class:`NodeSource`."""
    sig = inspect.signature(command)
    params = list(sig.parameters.values())
    at = next(i for i, p in enumerate(params) if p.name == "source")
    added = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann)
        for name, ann, opt in _SOURCE_OPTIONS
    ]
    names = [name for name, _, _ in _SOURCE_OPTIONS]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        given = {n: kwargs.pop(n) for n in names if n in kwargs}
        for n in ("dumps", "node_ips"):
            given[n] = tuple(given.get(n) or ())
        return command(*args, source=NodeSource(**given), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=params[:at] + added + params[at + 1 :])  # type: ignore[attr-defined]
    annotations = {k: v for k, v in getattr(command, "__annotations__", {}).items() if k != "source"}
    annotations.update({name: ann for name, ann, _ in _SOURCE_OPTIONS})
    wrapper.__annotations__ = annotations
    return wrapper


GRAPH_HELP = (
    "Also draw the path as a graph, in the format the name's extension says: .dot (Graphviz), .mmd (Mermaid), "
    ".svg or .png (through Graphviz's dot; exit 5 when it is not installed); - writes DOT to stdout, mmd:- Mermaid."
)


def check_graph(value: str | None) -> str | None:
    """``--graph``: refuse a name whose format is unknown before any input is read (a usage error, exit 2)."""
    if value is None:
        return value
    from kptrace.render.graph import graph_format

    try:
        graph_format(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return value


GraphOpt = typer.Option(None, "--graph", help=GRAPH_HELP, show_default=False, callback=check_graph, metavar="FILE")


def check_html(value: str | None) -> str | None:
    if value is not None and not value.lower().endswith((".html", ".htm")):
        raise typer.BadParameter(f"{value!r}: give a name ending in .html")
    return value


HtmlOpt = typer.Option(
    None,
    "--html",
    help="Also write a self-contained HTML report (tables and the picture as inline SVG; "
    "no external files) to attach to a CI run or a ticket.",
    show_default=False,
    callback=check_html,
    metavar="FILE",
)


def check_picture_tools(graph: str | None, output=None) -> None:
    """Before any input is read: an SVG or PNG --graph needs Graphviz's dot (exit 5 with a hint when it is missing);
    a graph on stdout leaves no room for ``-o json`` there (a usage error, not JSON silently left out)."""
    from kptrace.render.graph import graph_format, require_dot

    if graph in ("-", "dot:-", "mmd:-") and output is not None and getattr(output, "value", output) == "json":
        raise typer.BadParameter(f"--graph {graph} writes the graph to stdout, where -o json would go too: write the graph "
                                 "to a file (--graph FILE.dot) or leave out -o json", param_hint="--graph")
    if graph and graph_format(graph) in ("svg", "png"):
        require_dot()


def write_pictures(g, graph: str | None, html: str | None, make_html: Callable[[str | None, str], str]) -> None:
    """Write the graph ``g`` to ``graph`` (its format by extension; - for stdout) and the HTML report
    ``make_html(svg, dot)`` to ``html``; the SVG is made by Graphviz's dot, and is None when dot is missing
    (the report then carries the DOT text)."""
    import sys

    from kptrace.cli.common import stderr_console
    from kptrace.render.graph import render_image, to_dot, write_graph

    if graph:
        write_graph(g, graph, stdout=sys.stdout)
        if graph not in ("-", "dot:-", "mmd:-"):
            stderr_console().print(f"graph written to {graph}", highlight=False, markup=False)
    if html:
        from kptrace.errors import EnvironmentProblem
        from kptrace.render.html import write_html

        try:
            svg: str | None = render_image(to_dot(g), "svg").decode()
        except EnvironmentProblem as e:
            stderr_console().print(
                f"note: the report has the picture as DOT text: {e.message}", highlight=False, markup=False
            )
            svg = None
        write_html(html, make_html(svg, to_dot(g)))
        stderr_console().print(f"report written to {html}", highlight=False, markup=False)
