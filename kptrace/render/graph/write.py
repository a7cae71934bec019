"""Writing graphs: DOT, Mermaid and text by hand (tiny text formats, a node or an edge a line), SVG and PNG
through Graphviz's ``dot``, run in exactly one place (:func:`render_image`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from kptrace.errors import EnvironmentProblem, InputError
from kptrace.render.graph.model import Edge, Graph, Node

__all__ = ["graph_format", "render_image", "require_dot", "to_dot", "to_mermaid", "to_text", "write_graph"]

_NODE_STYLE: dict[str, dict[str, str]] = {  # Graphviz attributes by kind; Mermaid reuses the colours
    "entry": {"shape": "cds", "fillcolor": "#dbeafe"},
    "chain": {"shape": "box", "fillcolor": "#f8fafc"},
    "base": {"shape": "box", "fillcolor": "#f1f5f9"},
    "ipvs": {"shape": "box3d", "fillcolor": "#ede9fe"},
    "set": {"shape": "folder", "fillcolor": "#fef9c3"},
    "map": {"shape": "tab", "fillcolor": "#fef3c7"},
    "endpoint": {"shape": "ellipse", "fillcolor": "#dcfce7"},
    "summary": {"shape": "note", "fillcolor": "#e5e7eb"},
    "accept": {"shape": "ellipse", "fillcolor": "#d1fae5"},
    "drop": {"shape": "octagon", "fillcolor": "#fecaca", "color": "#b91c1c"},
    "reject": {"shape": "octagon", "fillcolor": "#fecaca", "color": "#b91c1c"},
    "incomplete": {"shape": "hexagon", "fillcolor": "#fef08a"},
    "hook": {"shape": "oval", "fillcolor": "#e0e7ff"},
}
_OWNER_FILL = {"kube-proxy": "#dbeafe", "cni": "#dcfce7", "firewall": "#ffedd5", "other": "#f1f5f9"}
_EDGE_STYLE: dict[str, dict[str, str]] = {
    "masquerade": {"color": "#ea580c", "fontcolor": "#ea580c", "style": "dashed"},
    "lookup": {"style": "dotted", "arrowhead": "none"},
    "then": {"penwidth": "1.5"},
    "flow": {"style": "dashed", "color": "#64748b"},
}
_CHANGE_STYLE = {
    "before": {"color": "#dc2626", "fontcolor": "#dc2626", "style": "dashed"},
    "after": {"color": "#16a34a", "fontcolor": "#16a34a", "penwidth": "2.5"},
}


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_attrs(n: Node) -> dict[str, str]:
    attrs = {"label": "\n".join(n.label), **_NODE_STYLE.get(n.kind, {})}
    if n.owner:
        attrs["fillcolor"] = _OWNER_FILL.get(n.owner, attrs.get("fillcolor", ""))
    if n.location:
        attrs["tooltip"] = n.location
    if n.change:
        attrs.update(color=_CHANGE_STYLE[n.change]["color"], penwidth="2")
    return attrs


def _edge_attrs(e: Edge) -> dict[str, str]:
    attrs = {"label": e.label} if e.label else {}
    attrs.update(_EDGE_STYLE.get(e.mark, {}))
    if e.change:
        attrs.update(_CHANGE_STYLE[e.change])
        attrs["label"] = f"{e.change}: {e.label}" if e.label else e.change
    return attrs


_BARE = re.compile(r"[\w.]+")


def _dot_attrs(attrs: dict[str, str]) -> str:
    return ", ".join(
        f"{k}={v if _BARE.fullmatch(v) and k not in ('label', 'tooltip') else _dot_quote(v)}" for k, v in attrs.items()
    )


def to_dot(g: Graph) -> str:
    """Graphviz DOT, left to right."""
    out = [
        "digraph kptrace {",
        f"  graph [rankdir=LR, fontname=Helvetica, fontsize=11, labelloc=t, label={_dot_quote(g.title)}, nodesep=0.25];",
        '  node [style="rounded,filled", fontname=Helvetica, fontsize=10, shape=box];',
        "  edge [fontname=Helvetica, fontsize=9];",
        "",
    ]
    grouped: dict[str, list[Node]] = {}
    for n in g.nodes:
        grouped.setdefault(n.group, []).append(n)
    for n in grouped.pop("", []):
        out.append(f"  {_dot_quote(n.id)} [{_dot_attrs(_node_attrs(n))}];")
    for i, group in enumerate(g.groups):
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f'    label={_dot_quote(group)}; style=rounded; color="#94a3b8";')
        for n in grouped.get(group, []):
            out.append(f"    {_dot_quote(n.id)} [{_dot_attrs(_node_attrs(n))}];")
        out.append("  }")
    for e in g.edges:
        attrs = _edge_attrs(e)
        out.append(f"  {_dot_quote(e.src)} -> {_dot_quote(e.dst)}" + (f" [{_dot_attrs(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid reads "#name;" as an entity: a literal "#" (rule numbers: "#6") is written as one too
    return (
        text.replace("#", "#35;")
        .replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("\n", "<br/>")
    )


_MERMAID_SHAPE = {
    "entry": ('>"', '"]'),
    "endpoint": ('(["', '"])'),
    "accept": ('(["', '"])'),
    "drop": ('{{"', '"}}'),
    "reject": ('{{"', '"}}'),
    "incomplete": ('{{"', '"}}'),
    "set": ('[("', '")]'),
    "map": ('[("', '")]'),
    "hook": ('(("', '"))'),
}


def to_mermaid(g: Graph) -> str:
    """A Mermaid flowchart (renders in GitHub and GitLab markdown), left to right; the same nodes and edges as DOT."""
    ids = {n.id: f"n{i}" for i, n in enumerate(g.nodes)}
    out = ["flowchart LR"]
    grouped: dict[str, list[Node]] = {}
    for n in g.nodes:
        grouped.setdefault(n.group, []).append(n)

    def line(n: Node, indent: str) -> str:
        left, right = _MERMAID_SHAPE.get(n.kind, ('["', '"]'))
        return f"{indent}{ids[n.id]}{left}{_mermaid_text(chr(10).join(n.label))}{right}"

    for n in grouped.pop("", []):
        out.append(line(n, "  "))
    for i, group in enumerate(g.groups):
        out.append(f'  subgraph g{i}["{_mermaid_text(group)}"]')
        out.extend(line(n, "    ") for n in grouped.get(group, []))
        out.append("  end")
    styles = []
    for i, e in enumerate(g.edges):
        arrow = (
            "-.->"
            if e.mark in ("lookup", "masquerade", "flow") or e.change == "before"
            else ("==>" if e.change == "after" else "-->")
        )
        label = _edge_attrs(e).get("label", "")
        out.append(f"  {ids[e.src]} {arrow}" + (f'|"{_mermaid_text(label)}"|' if label else "") + f" {ids[e.dst]}")
        colour = _CHANGE_STYLE[e.change]["color"] if e.change else _EDGE_STYLE.get(e.mark, {}).get("color")
        if colour:
            styles.append(f"  linkStyle {i} stroke:{colour},color:{colour}")
    classes: dict[str, list[str]] = {}
    for n in g.nodes:
        fill = _node_attrs(n).get("fillcolor", "#ffffff")
        stroke = _node_attrs(n).get("color", "#334155")
        classes.setdefault(f"fill:{fill},stroke:{stroke}", []).append(ids[n.id])
    for i, (style, members) in enumerate(classes.items()):
        out.append(f"  classDef c{i} {style}")
        out.append(f"  class {','.join(members)} c{i}")
    out.extend(styles)
    return "\n".join(out) + "\n"


def to_text(g: Graph) -> str:
    """The graph as an indented outline: each group (or the whole graph), its nodes, and where each leads."""
    out = []
    by_src: dict[str, list[Edge]] = {}
    for e in g.edges:
        by_src.setdefault(e.src, []).append(e)
    names = {n.id: n.label[0] if n.label else n.id for n in g.nodes}
    for group in g.groups or ("",):
        indent = "  " if group else ""
        if group:
            out.append(group)
        for n in (x for x in g.nodes if x.group == group):
            if group and n.kind != "base":
                continue  # a hook's own node, and the chains a base chain jumps to (listed under it)
            out.append(indent + "  ".join(x for x in n.label if x))
            for e in by_src.get(n.id, ()):
                if e.mark == "lookup":
                    out.append(f"{indent}    -> {names[e.dst]}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ files

_FORMATS = {".dot": "dot", ".gv": "dot", ".mmd": "mmd", ".mermaid": "mmd", ".svg": "svg", ".png": "png"}


def graph_format(path: str) -> str:
    """dot, mmd, svg or png, from a file name's extension (``-``: DOT on stdout, ``mmd:-``: Mermaid on stdout).

    >>> graph_format("svc.svg"), graph_format("-"), graph_format("mmd:-"), graph_format("x.MMD")
    ('svg', 'dot', 'mmd', 'mmd')
    """
    if path in ("-", "dot:-"):
        return "dot"
    if path == "mmd:-":
        return "mmd"
    fmt = _FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise ValueError(
            f"{path!r}: give a name ending in .dot, .mmd, .svg or .png (or - for DOT on stdout, mmd:- for Mermaid)"
        )
    return fmt


def require_dot() -> str:
    """The path of Graphviz's ``dot``, or an :class:`EnvironmentProblem` (exit 5) that says how to get it."""
    exe = shutil.which("dot")
    if exe is None:
        raise EnvironmentProblem(
            "SVG and PNG pictures need Graphviz's dot, which is not on PATH",
            hint="install Graphviz (apt-get install graphviz, dnf install graphviz, brew install graphviz), "
            "or write .dot or .mmd, which kptrace writes itself",
        )
    return exe


def render_image(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG bytes from DOT text, by running Graphviz's ``dot`` (the one place it runs)."""
    exe = require_dot()
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EnvironmentProblem(f"dot -T{fmt} could not run: {e}") from None
    if proc.returncode != 0:
        raise EnvironmentProblem(
            f"dot -T{fmt} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()[:500]}"
        )
    return proc.stdout


def write_graph(g: Graph, path: str, stdout=None) -> str:
    """Write ``g`` to ``path`` in the format its name says; ``-`` or ``mmd:-`` write to ``stdout``. Returns the format."""
    fmt = graph_format(path)
    if fmt in ("dot", "mmd"):
        text = to_dot(g) if fmt == "dot" else to_mermaid(g)
        if path in ("-", "dot:-", "mmd:-"):
            assert stdout is not None
            stdout.write(text)
            return fmt
        data = text.encode()
    else:
        data = render_image(to_dot(g), fmt)
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    return fmt
