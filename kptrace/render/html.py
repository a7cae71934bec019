"""One self-contained HTML report: the tables a command prints, and its picture as inline SVG.

Everything is in the one file (the style sheet inline, the SVG inline, no scripts, no fonts, no links
to fetch), so it can be attached to a CI run or an incident ticket and opened anywhere, offline. When
Graphviz's ``dot`` was not available the picture is given as its DOT text instead.

>>> doc = page("t", [section("Endpoints", table(("endpoint", "share"), [("10.0.0.1:80", "1/2")]))])
>>> "<td>10.0.0.1:80</td>" in doc and "http" not in doc.replace("http-equiv", "")
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from kptrace import __version__
from kptrace.tracer.result import nice_fraction

__all__ = ["diff_html", "drift_html", "page", "section", "service_html", "table", "write_html"]

_STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #0f172a; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #cbd5e1; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f1f5f9; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b91c1c; font-weight: 600; } .good { color: #15803d; } .muted { color: #64748b; }
.picture { overflow: auto; border: 1px solid #e2e8f0; padding: .5em; } .picture svg { max-width: none; }
pre { background: #f8fafc; border: 1px solid #e2e8f0; padding: .6em; overflow: auto; }
"""


def page(title: str, sections: Iterable[str]) -> str:
    """A whole HTML document: title, the sections, and a footer naming the kptrace version."""
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n"
        f'<p class="muted">made by kptrace {escape(__version__)}</p>\n</body>\n</html>\n'
    )


def section(heading: str, *parts: str) -> str:
    return f"<section>\n<h2>{escape(heading)}</h2>\n" + "\n".join(parts) + "\n</section>"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; every cell is escaped text (a cell that is a ``(text, css class)`` pair gets the class)."""
    out = ["<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text, cls = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(x for x in (cls, "num" if i in numeric else "") if x)
            cells.append(
                f"<td{f' class={chr(34)}{classes}{chr(34)}' if classes else ''}>{escape('' if text is None else str(text))}</td>"
            )
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_PROLOG = re.compile(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?", re.S)


def picture(svg: str | None, dot: str | None) -> str:
    """The SVG inline (its XML prolog and DOCTYPE, which names a DTD by URL, dropped), or the DOT text."""
    if svg:
        return f'<div class="picture">\n{_PROLOG.sub("", svg, count=1)}\n</div>'
    if dot:
        return (
            '<p class="muted">Graphviz\'s dot was not installed when this report was made: the picture is its DOT text '
            "(render it with <code>dot -Tsvg</code>).</p>\n"
            f"<pre>{escape(dot)}</pre>"
        )
    return ""


def _share(p) -> str:
    if p is None:
        return "—"
    nice = nice_fraction(p)
    pct = f"{float(p):.2%}"
    return pct if nice in ("1", "0") or "." in nice else f"{nice} ({pct})"


def _hostport(address: str | None, port: int) -> str:
    if address is None:
        return f"<node>:{port}"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def service_html(views: Sequence, *, svg: str | None = None, dot: str | None = None, notes: Sequence[str] = (),
                 drift=None, counters: dict | None = None, stale: dict | None = None) -> str:
    """``kptrace svc --html``: per Service port its entry points, endpoints with shares, where connections
    go from each origin, what the counters observed, its stale conntrack entries, its drift against the API
    (as the text view, when given: ``counters`` and ``stale`` by ``id(view)``), and warnings; then the picture."""
    from kptrace.tracer.kubeproxy import masquerade_reason

    parts = []
    for v in views:
        head = (
            f"<p>{escape(v.protocol)}, IPv{v.family}; chains: {escape(', '.join(v.chains) or 'none')}; traffic policy internal "
            f"{escape(v.internal_policy)}"
            + (f", external {escape(v.external_policy)}" if v.external_policy else "")
            + (f"; session affinity ClientIP, {v.affinity_timeout}s" if v.affinity_timeout else "")
            + "</p>"
        )
        entries = table(
            ("kind", "address", "leads to", "rule"),
            [
                (
                    e.kind,
                    _hostport(e.address, e.port),
                    (e.via, "bad" if e.via in ("REJECT", "DROP") else ""),
                    e.location,
                )
                for e in v.entry_points
            ],
        )
        endpoints = table(
            ("endpoint", "share (pod → ClusterIP)", "chain", "local"),
            [(e.address, _share(e.probability), e.chain, "yes" if e.local else "") for e in v.endpoints],
            numeric=(1,),
        )
        rows = []
        for et in v.traces:
            for o in et.trace.outcomes:
                masq = "no"
                if o.masquerade or o.snat:
                    step, why = masquerade_reason(o)
                    where = f" ({step.chain} #{step.rule})" if step is not None and step.rule else ""  # type: ignore[attr-defined]
                    masq = f"yes: {why}{where}"
                outcome = (o.dnat or o.verdict) + (f" {o.verdict}" if o.dnat and o.verdict != "ACCEPT" else "")
                rows.append(
                    (
                        f"{et.entry.kind} {_hostport(et.entry.address, et.entry.port)}",
                        et.label,
                        _share(o.probability),
                        (outcome, "bad" if o.verdict in ("DROP", "REJECT") else ""),
                        masq,
                    )
                )
        flows = table(("entry", "from", "probability", "outcome", "masquerade (why)"), rows, numeric=(2,))
        warnings = "".join(f'<li class="bad">{escape(w)}</li>' for w in v.warnings)
        parts.append(
            section(
                v.name,
                head,
                "<h3>Entry points</h3>",
                entries,
                "<h3>Endpoints</h3>",
                endpoints,
                "<h3>Where connections go, by entry point and origin</h3>",
                flows,
                _observed_html((counters or {}).get(id(v))),
                _stale_html((stale or {}).get(id(v)) if stale is not None else None),
                _drift_html(v, drift),
                f"<h3>Warnings</h3><ul>{warnings}</ul>" if warnings else "",
            )
        )
    if svg or dot:
        parts.append(section("Picture", picture(svg, dot)))
    if notes:
        parts.append(section("Notes", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"))
    return page("kptrace svc: " + ", ".join(dict.fromkeys(v.name for v in views)), parts)


def _observed_html(counters) -> str:
    """What the DNAT rules' packet counters observed against the predicted shares (svc --since / counters)."""
    if counters is None:
        return ""
    what = "counter growth since " + counters.since if counters.since else "DNAT rule packet counters"
    items = "".join(f"<li>{escape(n)}</li>" for n in counters.notes)
    cls = ' class="bad"' if counters.skewed else ""
    return f"<h3>Observed vs predicted</h3><p{cls}>{escape(what)}: {escape(counters.verdict)}</p>" + (f"<ul>{items}</ul>" if items else "")


def _stale_html(stale) -> str:
    """The view's stale conntrack entries, by protocol and old endpoint, with the command that clears each group."""
    if stale is None:
        return ""
    if not stale:
        return "<h3>Stale conntrack</h3><p>no stale conntrack entries</p>"
    from kptrace.checks.stale import delete_command

    groups: dict[tuple, list] = {}
    for s_ in stale:
        groups.setdefault((s_.entry.protocol, s_.endpoint), []).append(s_)
    rows = [(proto.upper(), (ep, "bad"), len(items), sum(x.blackholed for x in items), delete_command(items[0]))
            for (proto, ep), items in sorted(groups.items())]
    return "<h3>Stale conntrack</h3>" + table(("protocol", "old endpoint", "entries", "blackholed", "clears them"), rows,
                                              numeric=(2, 3))


def _drift_html(v, drift) -> str:
    """The view's drift against the API (svc --node-name with a cluster state)."""
    if drift is None:
        return ""
    found = [f for f in drift.findings if f.hash == v.hash and f.family == v.family]
    if not found:
        return f"<h3>Drift</h3><p>in sync with the API as node {escape(drift.node)}</p>"
    rows = [((f.kind, "bad"), f.endpoint or f.entry or "", f.detail) for f in found]
    return f"<h3>Drift against the API as node {escape(drift.node)}</h3>" + table(("kind", "endpoint / entry", "detail"), rows)


def drift_html(
    reports: Sequence, errors: Sequence[tuple[str, str]], *, cluster_state: str = "", kube_proxy: str = ""
) -> str:
    """``kptrace drift --html``: a summary per node, every finding, and every Service port checked."""
    nodes = table(
        ("node", "sources", "Service ports checked", "findings"),
        [
            (r.node, ", ".join(r.sources), len(r.ports), (len(r.findings), "bad" if r.findings else "good"))
            for r in reports
        ]
        + [(n, ("could not be read: " + m, "bad"), "", "") for n, m in errors],
        numeric=(2, 3),
    )
    findings = table(
        ("node", "severity", "kind", "Service", "entry / endpoint", "detail"),
        [
            (
                f.node,
                (f.severity, "bad" if f.severity == "error" else ""),
                f.kind,
                f"{f.service} ({f.protocol}, IPv{f.family})",
                f.endpoint or f.entry or "",
                f.detail,
            )
            for r in reports
            for f in r.findings
        ],
    )
    ports = table(
        ("node", "Service", "expected endpoints", "on the node", "findings"),
        [
            (
                r.node,
                f"{p.service} ({p.protocol}, IPv{p.family})",
                _endpoints(p.expected, p.expected_local),
                _endpoints(p.actual, p.actual_local),
                (p.findings, "bad" if p.findings else "good"),
            )
            for r in reports
            for p in r.ports
        ],
        numeric=(4,),
    )
    total = sum(len(r.findings) for r in reports)
    head = (
        f"<p>{total} finding{'s' if total != 1 else ''} on {len(reports)} node{'s' if len(reports) != 1 else ''}"
        + (f", {len(errors)} not read" if errors else "")
        + (f"; expected state from {escape(cluster_state)}" if cluster_state else "")
        + (f"; kube-proxy {escape(kube_proxy)}" if kube_proxy else "")
        + "</p>"
    )
    notes = [f"{r.node}: {n}" for r in reports for n in r.notes]
    return page(
        "kptrace drift",
        [
            head,
            section("Nodes", nodes),
            section("Findings", findings if total else '<p class="good">none</p>'),
            section("Service ports checked", ports),
        ]
        + ([section("Notes", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")] if notes else []),
    )


def _endpoints(cluster, local) -> str:
    if cluster is None and local is None:
        return "—"
    out = ", ".join(cluster or ())
    if local:
        out += ("; " if out else "") + "local: " + ", ".join(local)
    return out or "none"


def diff_html(
    results: Sequence[tuple[str, Any]],  # (label, DiffReport)
    *,
    reference: str | None = None,
    svg: str | None = None,
    dot: str | None = None,
) -> str:
    """``kptrace diff --html``: each comparison's changes (entry point, origin, before, after, cause), then the picture."""
    parts = []
    for label, report in results:
        rows = [
            (
                c.service or "?",
                c.probe.dst,
                c.probe.origin + (f" {c.probe.source_class}" if c.probe.source_class else ""),
                c.before.summary(),
                c.after.summary(),
                c.cause + (f" ({c.explanation})" if c.explanation else ""),
                f"{c.before_rule} → {c.after_rule}",
            )
            for c in report.changes
        ]
        head = (
            f"<p>{len(report.changes)} change{'s' if len(report.changes) != 1 else ''}; {report.compared} entry point × origin "
            f"pairs compared, {report.unchanged} unchanged. Before: {escape(', '.join(report.before))}; after: "
            f"{escape(', '.join(report.after))}</p>"
        )
        body = (
            table(("Service", "entry point", "from", "before", "after", "cause", "rules"), rows)
            if rows
            else '<p class="good">no behaviour changed</p>'
        )
        notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
        parts.append(section(label or "before → after", head, body, f"<ul>{notes}</ul>" if notes else ""))
    if svg or dot:
        parts.append(
            section("Picture: the changed entry points, before (red, dashed) and after (green)", picture(svg, dot))
        )
    return page("kptrace diff" + (f" (reference {reference})" if reference else ""), parts)


def write_html(path: str, text: str) -> None:
    from kptrace.errors import InputError

    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
