"""--html (issue 17): one self-contained file per report (svc, drift, diff): no external references, the tables
the command prints (checked against its JSON output), and the picture as inline SVG that is XML."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT

HAVE_DOT = shutil.which("dot") is not None
MODERN = "fixtures/samples/yaobank-modern.rules"
STALE = "fixtures/drift/yaobank/stale-endpoint.cluster.json"
MIGRATION = (
    "fixtures/nft/migration/overall.iptables-save",
    "fixtures/nft/overall-1.37.nft",
    "--node-ip",
    "192.168.0.2",
)

_EXTERNAL = re.compile(r"""\b(?:src|href|xlink:href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def _self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not _EXTERNAL.search(html), _EXTERNAL.search(html).group(0)
    for banned in ("<script", "<link", "@import", "url(", "<iframe", "<img"):
        assert banned not in html.lower(), banned


def _cells(html: str) -> list[str]:
    import html as h

    return [h.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", html, re.S)]


def _svg(html: str) -> ET.Element:
    m = re.search(r"<svg\b.*?</svg>", html, re.S)
    assert m, "no inline SVG"
    return ET.fromstring(m.group(0))


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed (scripts/test installs it)")
def test_svc_report(run, tmp_path):
    args = ("svc", "yaobank/frontend", "--dump", MODERN, "--node-ip", "10.240.0.11")
    code, out, _ = run(*args, "-o", "json")
    assert code == 0
    doc = json.loads(out)
    code, _, err = run(*args, "--html", str(tmp_path / "r.html"))
    assert code == 0 and "report written to" in err
    html = (tmp_path / "r.html").read_text()
    _self_contained(html)
    cells = _cells(html)
    for s in doc["services"]:
        for e in s["endpoints"]:
            assert e["address"] in cells
        for e in s["entry_points"]:
            assert e["source"] in cells  # the entry rule's file:line
    svg = _svg(html)
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    titles = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}title")}
    assert {f"endpoint:{e['address']}" for s in doc["services"] for e in s["endpoints"]} <= titles


def test_drift_report(run, tmp_path):
    args = ("drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE)
    code_json, out, _ = run(*args, "-o", "json")
    doc = json.loads(out)
    assert doc["findings"]
    code, _, _ = run(*args, "--html", str(tmp_path / "d.html"))
    assert code == code_json == 1
    html = (tmp_path / "d.html").read_text()
    _self_contained(html)
    findings = html.split("<h2>Findings</h2>", 1)[1].split("</section>", 1)[0]
    assert findings.count("<tr>") == len(doc["findings"]) + 1  # and the header row
    cells = _cells(findings)
    for f in doc["findings"]:
        assert f["kind"] in cells and f["detail"] in cells
    assert len(re.findall(r"<tr>", html.split("<h2>Service ports checked</h2>", 1)[1])) == len(doc["services"]) + 1


@pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot is not installed (scripts/test installs it)")
def test_diff_report_and_graph(run, tmp_path):
    code, out, _ = run("diff", *MIGRATION, "-o", "json")
    doc = json.loads(out)
    changes = doc["changes"]
    assert changes and sum(c["changes"] for c in doc["comparisons"]) == len(changes)
    code, _, _ = run("diff", *MIGRATION, "--html", str(tmp_path / "d.html"), "--graph", str(tmp_path / "d.dot"))
    assert code == 1
    html = (tmp_path / "d.html").read_text()
    _self_contained(html)
    table = html.split("<table>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == len(changes) + 1
    _svg(html)
    dot = (tmp_path / "d.dot").read_text()
    assert 'label="before' in dot and 'label="after' in dot  # the changed edges, each side marked
    assert dot.count('"probe:') >= 1


def test_report_without_dot_carries_the_dot_text(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "NO_COLOR": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "kptrace",
            "svc",
            "yaobank/summary",
            "--dump",
            "fixtures/samples/yaobank.rules",
            "--html",
            str(tmp_path / "r.html"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "Graphviz's dot" in res.stderr
    html = (tmp_path / "r.html").read_text()
    _self_contained(html)
    assert "<svg" not in html and "<pre>digraph kptrace {" in html


def test_html_option_wants_an_html_name(run, tmp_path):
    code, _, err = run(
        "drift", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE, "--html", str(tmp_path / "r.txt")
    )
    assert code == 2 and ".html" in err and not (tmp_path / "r.txt").exists()


def test_diff_nodes_report_and_graph(run, tmp_path):
    """--nodes: each node against the majority; the report has one table row per change, the graph draws twelve
    changed entry points and counts the rest."""
    from test_graph import read_dot

    nodes = tmp_path / "snap"
    for name, dump in (("node-a", MODERN), ("node-b", "fixtures/samples/yaobank.rules"), ("node-c", MODERN)):
        (nodes / name).mkdir(parents=True)
        (nodes / name / "iptables-save.txt").write_text((ROOT / dump).read_text())
        (nodes / name / "meta.json").write_text(json.dumps({"version": 1, "node": name, "kube_proxy_mode": "iptables"}))
    code, out, _ = run("diff", "--nodes", str(nodes), "-o", "json")
    changes = json.loads(out)["changes"]
    assert code == 1 and len(changes) > 12 and {c["nodes"] for c in changes} == {"node-a -> node-b"}
    code, _, _ = run(
        "diff", "--nodes", str(nodes), "--html", str(tmp_path / "d.html"), "--graph", str(tmp_path / "d.dot")
    )
    assert code == 1
    html = (tmp_path / "d.html").read_text()
    _self_contained(html)
    assert html.count("<tr>") - html.count("<tr><th>") == len(changes)
    drawn, _, _ = read_dot((tmp_path / "d.dot").read_text())
    assert sum(n.startswith("probe:") for n in drawn) == 12
    assert drawn["more-changes"]["label"].startswith(f"{len(changes) - 12} more changes")


def test_svc_report_has_the_stale_and_drift_sections(run, tmp_path):
    """svc --html carries what the text view adds with --conntrack and --cluster-state: the stale entries by old
    endpoint with the command that clears them, and the drift against the API."""
    stale_args = ("svc", "ns12/svc12", "--dump", "fixtures/nft/overall-1.37.nft", "--conntrack",
                  "tests/cases/stale/overall-after-rollout.conntrack")
    code, out, _ = run(*stale_args, "-o", "json")
    doc = json.loads(out)
    code, _, err = run(*stale_args, "--html", str(tmp_path / "s.html"))
    html = (tmp_path / "s.html").read_text()
    _self_contained(html)
    cells = _cells(html)
    stale = [s for svc in doc["services"] for s in svc["stale_conntrack"]]
    assert stale
    for s in stale:
        assert s["endpoint"] in cells and s["command"] in cells
    drift_args = ("svc", "yaobank/summary", "--dump", MODERN, "--node-name", "node1", "--cluster-state", STALE)
    code, out, _ = run(*drift_args, "-o", "json")
    doc = json.loads(out)
    code, _, err = run(*drift_args, "--html", str(tmp_path / "d.html"))
    html = (tmp_path / "d.html").read_text()
    assert "Drift against the API as node node1" in html
    findings = [f for svc in doc["services"] for f in svc["expected"]["findings"]]
    assert findings
    cells = _cells(html)
    for f in findings:
        assert f["kind"] in cells and f["endpoint"] in cells
