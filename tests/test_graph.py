"""Pictures (issue 17): Service, trace and node graphs read back from the DOT kptrace writes.

Each case in tests/cases/graph/services.toml is a Service of one proxy mode; its graph is parsed back (a small DOT
reader below, and Graphviz's own ``dot -Tplain``) and checked against the input and the traces: every endpoint the
traces reach is a node with its share, the shares sum to 1, each chain's file:line is a line of that chain in the
input, drop / reject / masquerade branches are marked exactly when a trace has them, and Mermaid has the same nodes
and edges. Then: summarised at 100 endpoints, SVG that is XML, the message when ``dot`` is missing, and that
``kptrace --help`` does not import the picture modules.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import ROOT

from kptrace.render.graph import Graph, node_graph, service_graph, to_dot, to_mermaid, trace_graph, write_graph

CASES = tomllib.loads((ROOT / "tests/cases/graph/services.toml").read_text())["case"]
HAVE_DOT = shutil.which("dot") is not None


# ------------------------------------------------------------------ a tiny DOT reader (the subset to_dot writes)

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_NODE = re.compile(rf"^\s*({_QUOTED})\s*\[(.*)\];$")
_EDGE = re.compile(rf"^\s*({_QUOTED})\s*->\s*({_QUOTED})(?:\s*\[(.*)\])?;$")
_ATTR = re.compile(rf"(\w+)=({_QUOTED}|[^,\s]+)")


def _unquote(text: str) -> str:
    if not text.startswith('"'):
        return text
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text[1:-1])


def read_dot(text: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, dict[str, str]]], str]:
    """(nodes: id -> attributes, edges: (tail, head, attributes), the graph attribute line)."""
    nodes: dict[str, dict[str, str]] = {}
    edges: list[tuple[str, str, dict[str, str]]] = []
    graph_line = ""
    for line in text.splitlines():
        if line.strip().startswith("graph ["):
            graph_line = line
        elif m := _EDGE.match(line):
            edges.append(
                (
                    _unquote(m.group(1)),
                    _unquote(m.group(2)),
                    {k: _unquote(v) for k, v in _ATTR.findall(m.group(3) or "")},
                )
            )
        elif m := _NODE.match(line):
            nodes[_unquote(m.group(1))] = {k: _unquote(v) for k, v in _ATTR.findall(m.group(2))}
    return nodes, edges, graph_line


def _views(case: dict):
    from kptrace.load import load_bundle, load_dumps
    from kptrace.tracer.services import service_views

    if "bundle" in case:
        from kptrace.checks.expected import expected_ports
        from kptrace.cli.svc import _bundle_cluster_state
        from kptrace.tracer.services_ipvs import ipvs_service_views

        dp = load_bundle(str(ROOT / case["bundle"]))
        state, node = _bundle_cluster_state(str(ROOT / case["bundle"]))
        return ipvs_service_views(dp, case["query"], state, node, expected_ports=expected_ports)
    dp = load_dumps([str(ROOT / f) for f in case["dumps"]], node_ips=case.get("node_ips", []))
    return service_views(dp, case["query"])


def _share(text: str) -> Fraction:
    return Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)


def _reachable(edges, starts) -> set[str]:
    seen, todo = set(starts), list(starts)
    while todo:
        n = todo.pop()
        for a, b, _ in edges:
            if a == n and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def _chain_of_line(path: str, line: int) -> str:
    """The chain an input line belongs to: its -A chain, its :chain declaration, or (nft) the enclosing chain block."""
    lines = Path(path).read_text().splitlines()
    text = lines[line - 1]
    if m := re.match(r"(?:\[\d+:\d+\] )?-A (\S+) |:(\S+) ", text):
        return m.group(1) or m.group(2)
    for i in range(line - 1, -1, -1):
        if m := re.match(r"\s*chain (\S+) \{", lines[i]):
            return m.group(1)
    return text


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_service_graph_structure(case):
    views = _views(case)
    dot = to_dot(service_graph(views))
    nodes, edges, graph_line = read_dot(dot)
    assert "rankdir=LR" in graph_line
    assert nodes and edges
    for a, b, _ in edges:
        assert a in nodes and b in nodes, (a, b)

    # entry points: one node each, named with kind and address
    entries = {n for n, a in nodes.items() if a.get("shape") == "cds"}
    kinds = {(v.family, e.kind, e.address, e.port, e.protocol) for v in views for e in v.entry_points}
    assert len(entries) == len(kinds)

    # endpoints: exactly those the traces DNAT to, each with its share; per Service port the shares sum to 1
    outcomes = [o for v in views for et in v.traces for o in et.trace.outcomes]
    endpoint_nodes = {a["label"].split("\n")[0]: a for n, a in nodes.items() if n.startswith("endpoint:")}
    assert set(endpoint_nodes) == {o.dnat for o in outcomes if o.dnat}
    for v in views:
        mine = [
            endpoint_nodes[e.address] for e in v.endpoints if e.address in endpoint_nodes and e.probability is not None
        ]
        if mine:
            total = sum((_share(a["label"].split("\n")[-1]) for a in mine), Fraction(0))
            assert abs(total - 1) < Fraction(1, 10**4), (v.name, total)
    assert _reachable(edges, entries) >= {n for n in nodes if n.startswith("endpoint:")}

    # chains: the file:line each carries is a line of that chain (or of the IPVS virtual service) in the input
    chains = {n: a for n, a in nodes.items() if a.get("shape") in ("box", "box3d") and "tooltip" in a}
    assert chains
    for n, a in chains.items():
        name = n.split("/", 1)[1]  # "nat/KUBE-SVC-…", "ip kube-proxy/service-…", "ipvs/10.96.5.20:80"
        # only kube-proxy's chains: a CNI's or the firewall's are left out of a Service's picture
        assert name.startswith("KUBE-") or n.startswith(("ipvs/", "ip kube-proxy/", "ip6 kube-proxy/")), n
        path, _, line = a["tooltip"].rpartition(":")
        if not line.isdigit():  # nft -j: no lines; the label names the file and the rule's number
            assert re.fullmatch(rf"{re.escape(os.path.basename(a['tooltip']))} rule #\d+", a["label"].split("\n")[-1])
            continue
        assert a["label"].split("\n")[-1] == f"{os.path.basename(path)}:{line}"
        if n.startswith("ipvs/"):
            assert name.strip("[]").split("]")[0] in Path(path).read_text().splitlines()[int(line) - 1]
        else:
            assert _chain_of_line(path, int(line)) == name, (n, a["tooltip"])

    # marks: a red octagon per DROP / REJECT end, an orange dashed edge where a branch is masqueraded
    verdicts = {a["label"].split("\n")[0] for a in nodes.values() if a.get("shape") == "octagon"}
    untraced = {
        e.via
        for v in views
        for e in v.entry_points
        if e.via in ("DROP", "REJECT") and not any(et.entry == e for et in v.traces)
    }
    assert verdicts == {o.verdict for o in outcomes if o.verdict in ("DROP", "REJECT")} | untraced
    masq_edges = [e for e in edges if e[2].get("style") == "dashed" and "masquerade" in e[2].get("label", "")]
    assert bool(masq_edges) == any((o.masquerade or o.snat) and o.dnat for o in outcomes)
    for _, head, attrs in masq_edges:
        where = re.search(r"masquerade \((\S+)( #\d+)?, (\S+?)\)", attrs["label"])  # the rule, file:line
        assert head.startswith("endpoint:") and where, attrs["label"]
        assert re.search(r":\d+$", where.group(3)) or where.group(3).endswith(".json")  # nft -j has no lines


def _read_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    def unescape(s: str) -> str:
        return (
            s.replace("<br/>", "\n")
            .replace("#quot;", '"')
            .replace("#lt;", "<")
            .replace("#gt;", ">")
            .replace("#amp;", "&")
            .replace("#35;", "#")
        )

    labels, edges = {}, []
    for line in text.splitlines()[1:]:
        if m := re.match(r'^\s*(n\d+) (?:-->|-\.->|==>)(?:\|"(.*)"\|)? (n\d+)$', line):
            edges.append((m.group(1), m.group(3), unescape(m.group(2) or "")))
        elif m := re.match(r'^\s*(n\d+)[\[\(\{>]+"(.*)"[\]\)\}]+$', line):
            labels[m.group(1)] = unescape(m.group(2))
    return labels, [(labels[a], labels[b], label) for a, b, label in edges]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_mermaid_has_the_nodes_and_edges_of_dot(case):
    g = service_graph(_views(case))
    nodes, edges, _ = read_dot(to_dot(g))
    labels, m_edges = _read_mermaid(to_mermaid(g))
    assert to_mermaid(g).startswith("flowchart LR\n")
    assert Counter(labels.values()) == Counter(a["label"] for a in nodes.values())
    assert Counter(m_edges) == Counter(
        (nodes[a]["label"], nodes[b]["label"], attrs.get("label", "")) for a, b, attrs in edges
    )


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed (scripts/test installs it)")
@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4] + CASES[5:6], ids=lambda c: c["name"])
def test_graphviz_reads_the_same_graph_and_svg_is_xml(case, tmp_path):
    g = service_graph(_views(case))
    plain = subprocess.run(["dot", "-Tplain"], input=to_dot(g), capture_output=True, text=True, check=True).stdout
    kinds = Counter(line.split(" ", 1)[0] for line in plain.splitlines())
    assert (kinds["node"], kinds["edge"]) == (len(g.nodes), len(g.edges))
    write_graph(g, str(tmp_path / "g.svg"))
    root = ET.parse(tmp_path / "g.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    classes = Counter(el.get("class") for el in root.iter() if el.get("class") in ("node", "edge"))
    assert (classes["node"], classes["edge"]) == (len(g.nodes), len(g.edges))
    write_graph(g, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ many endpoints


def _big_service(n: int) -> str:
    """An iptables-save of one Service with ``n`` endpoints, as kube-proxy writes it (1/(n-i) per rule, the last
    rule unconditional)."""
    from kptrace.model.kube import service_chain_hash

    svc = "KUBE-SVC-" + service_chain_hash("big/web:http", "tcp")
    seps = ["KUBE-SEP-" + service_chain_hash(f"big/web:http-{i}", "tcp") for i in range(n)]
    out = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        ":KUBE-SERVICES - [0:0]",
        f":{svc} - [0:0]",
    ] + [f":{s} - [0:0]" for s in seps]
    out += [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        f'-A KUBE-SERVICES -d 10.96.0.50/32 -p tcp -m comment --comment "big/web:http cluster IP" '
        f"-m tcp --dport 80 -j {svc}",
    ]
    for i, s in enumerate(seps):
        stat = f"-m statistic --mode random --probability {1 / (n - i):.11f} " if i < n - 1 else ""
        out.append(f'-A {svc} -m comment --comment "big/web:http -> 10.1.{i // 250}.{i % 250 + 1}:8080" {stat}-j {s}')
        out.append(
            f'-A {s} -p tcp -m comment --comment "big/web:http" -m tcp -j DNAT --to-destination '
            f"10.1.{i // 250}.{i % 250 + 1}:8080"
        )
    return "\n".join(out + ["COMMIT", ""])


@pytest.mark.parametrize("n, drawn", [(10, 10), (100, 12)])
def test_many_endpoints_are_summarised(n, drawn, tmp_path):
    from kptrace.load import load_dumps
    from kptrace.tracer.defaults import plan_packet, trace_packet
    from kptrace.tracer.services import service_views

    dump = tmp_path / "big.rules"
    dump.write_text(_big_service(n))
    dp = load_dumps([str(dump)])
    views = service_views(dp, "big/web")
    assert len(views[0].endpoints) == n
    traced = trace_packet(dp, plan_packet(dp, "10.96.0.50", 80))
    for g in (service_graph(views), trace_graph(traced)):
        endpoints = [x for x in g.nodes if x.kind == "endpoint"]
        summary = [x for x in g.nodes if x.kind == "summary"]
        assert len(endpoints) == drawn
        assert len(summary) == (n > drawn)
        assert sum((x.share for x in endpoints + summary), Fraction(0)) == 1  # exact, as the kernel quantises
        if summary:
            assert summary[0].label[0] == f"{n - drawn} more endpoints"
            ranked = sorted((e.probability for e in views[0].endpoints), reverse=True)
            assert sorted((x.share for x in endpoints), reverse=True) == ranked[:drawn]
        assert len(g.nodes) <= drawn * 2 + 8  # readable: the drawn endpoints' chains, a handful more
        nodes, edges, _ = read_dot(to_dot(g))
        assert len(nodes) == len(g.nodes) and len(edges) == len(g.edges)


# ------------------------------------------------------------------ packet, node, files, errors


def test_packet_graph_marks_masquerade_from_the_node():
    from kptrace.load import load_dumps
    from kptrace.tracer.defaults import plan_packet, trace_packet
    from kptrace.tracer.packet import Origin

    dp = load_dumps([str(ROOT / "fixtures/samples/bootcamp.rules")], node_ips=["192.168.193.172"])
    for origin, masq in ((Origin.NODE, True), (Origin.POD, False)):
        t = trace_packet(dp, plan_packet(dp, "10.106.224.41", 8080, origin=origin))
        nodes, edges, _ = read_dot(to_dot(trace_graph(t)))
        dashed = [e for e in edges if "masquerade" in e[2].get("label", "")]
        assert bool(dashed) == masq
        ends = {a["label"].split("\n")[0] for n, a in nodes.items() if n.startswith("endpoint:")}
        assert ends == {o.dnat for o in t.outcomes}


def test_node_graph_orders_each_hooks_base_chains_by_priority():
    from kptrace.load import load_dumps
    from kptrace.tracer.hooks import base_chains

    dp = load_dumps([str(ROOT / "fixtures/nft/mixed-1.37.nft"), str(ROOT / "fixtures/nft/mixed-1.37.iptables-save")])
    hooks = base_chains(dp)
    g = node_graph(hooks)
    assert set(g.groups) == {f"IPv{f} {h}" for f, h, _ in hooks}
    nodes, edges, _ = read_dot(to_dot(g))
    tables = set()
    for fam, hook, chains in hooks:
        # walk the "then" edges from the hook's node: the base chains in the order the graph draws them
        order, at = [], f"hook:{fam}:{hook}"
        nxt = {a: b for a, b, attrs in edges if attrs.get("penwidth") == "1.5"}
        while at in nxt:
            at = nxt[at]
            order.append(nodes[at]["label"].split("\n"))
        assert [f"{c['table']} {c['chain']}" for c in chains] == [x[0] for x in order]
        priorities = [int(re.match(r"priority (-?\d+)", x[1]).group(1)) for x in order]
        assert priorities == sorted(priorities)
        tables |= {c["table"] for c in chains}
    assert any("(iptables)" in t for t in tables) and "ip kube-proxy" in tables


def test_node_command_text_and_graph_list_the_same_chains(run, tmp_path):
    args = ("node", "--dump", "fixtures/nft/mixed-1.37.nft", "--dump", "fixtures/nft/mixed-1.37.iptables-save")
    code, text, _ = run(*args)
    assert code == 0
    code, dot, _ = run(*args, "--graph", "-")
    assert code == 0 and dot.startswith("digraph")
    nodes, _, _ = read_dot(dot)
    base = Counter(a["label"].split("\n")[0] for n, a in nodes.items() if n.startswith("base:"))
    listed = Counter(
        line.split("  ")[1] for line in text.splitlines() if line.startswith("  ") and not line.startswith("      ")
    )
    assert base == listed and sum(base.values()) > 10


def test_graph_to_stdout_is_the_only_output(run):
    common = ("svc", "yaobank/summary", "--dump", "fixtures/samples/yaobank.rules", "--node-ip", "10.240.0.11")
    code, out, _ = run(*common, "--graph", "-")
    assert code == 0 and out.startswith("digraph kptrace {") and out.rstrip().endswith("}")
    code, out, _ = run(*common, "--graph", "mmd:-")
    assert code == 0 and out.startswith("flowchart LR\n") and "Traffic policy" not in out


def test_unknown_picture_format_is_a_usage_error(run, tmp_path):
    code, _, err = run(
        "packet",
        "--dst",
        "198.19.40.210:80",
        "--dump",
        "fixtures/samples/yaobank.rules",
        "--graph",
        str(tmp_path / "x.jpeg"),
    )
    assert code == 2 and ".svg" in err and not (tmp_path / "x.jpeg").exists()


def _kptrace(*args: str, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "COLUMNS": "120", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "kptrace", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_missing_dot_says_so_with_exit_5(tmp_path):
    common = ("svc", "yaobank/summary", "--dump", "fixtures/samples/yaobank.rules")
    for ext in ("svg", "png"):
        res = _kptrace(*common, "--graph", str(tmp_path / f"g.{ext}"), path=str(tmp_path))  # no dot on this PATH
        assert res.returncode == 5, res.stderr
        assert "Graphviz's dot" in res.stderr and "hint:" in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / f"g.{ext}").exists()
    for ext in ("dot", "mmd"):  # written by kptrace itself: no dot needed
        res = _kptrace(*common, "--graph", str(tmp_path / f"g.{ext}"), path=str(tmp_path))
        assert res.returncode == 0, res.stderr
        assert (tmp_path / f"g.{ext}").read_text().startswith("digraph" if ext == "dot" else "flowchart")


def test_help_does_not_import_the_picture_modules():
    code = (
        "import sys\nfrom kptrace.cli.main import main\n"
        "for argv in (['--help'], ['svc', '--help'], ['packet', '--help'], ['diff', '--help'], ['node', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in sys.modules if m in ('kptrace.render.graph', 'kptrace.render.html')))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed (scripts/test installs it)")
def test_readme_picture_is_this_commands_graph():
    """docs/img/svc-graph.svg (README's picture) is what the command that made it (in README or docs/pictures.md)
    draws now: the same nodes and edges (Graphviz's <title>s)."""
    assert "](docs/img/svc-graph.svg)" in (ROOT / "README.md").read_text()
    texts = [(ROOT / p).read_text() for p in ("README.md", "docs/pictures.md") if (ROOT / p).exists()]
    found = [
        m.group(1)
        for t in texts
        for m in [re.search(r"^(kptrace svc .* --graph docs/img/svc-graph\.svg)$", t, re.M)]
        if m
    ]
    assert found, "the command that made docs/img/svc-graph.svg is not shown"
    command = found[0]
    args = command.split()[1:]
    res = subprocess.run([sys.executable, "-m", "kptrace", *args[:-1], "-"], capture_output=True, text=True, cwd=ROOT)
    nodes, edges, _ = read_dot(res.stdout)
    root = ET.parse(ROOT / "docs/img/svc-graph.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    titles = {g.get("class"): [] for g in root.iter(f"{ns}g")}
    for el in root.iter(f"{ns}g"):
        t = el.find(f"{ns}title")
        if el.get("class") in ("node", "edge") and t is not None:
            titles[el.get("class")].append(t.text)
    assert Counter(titles["node"]) == Counter(list(nodes))
    assert Counter(titles["edge"]) == Counter(f"{a}->{b}" for a, b, _ in edges)


def test_graph_value_is_what_the_writers_read():
    """A hand-made graph: DOT and Mermaid quote what needs quoting, and the reader gets the labels back."""
    from kptrace.render.graph import Edge, Node

    g = Graph(
        'q"uote',
        (Node('a"1', "entry", ("x<y>", "p\\q")), Node("b", "drop", ("DROP",))),
        (Edge('a"1', "b", 'say "hi"'),),
    )
    nodes, edges, _ = read_dot(to_dot(g))
    assert nodes['a"1']["label"] == "x<y>\np\\q" and edges == [('a"1', "b", {"label": 'say "hi"'})]
    labels, m_edges = _read_mermaid(to_mermaid(g))
    assert sorted(labels.values()) == ["DROP", "x<y>\np\\q"] and m_edges == [("x<y>\np\\q", "DROP", 'say "hi"')]
