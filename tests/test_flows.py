"""Table-driven packet-flow tests: each file in cases/flows/ names a dump and lists packets with the
outcomes they must have (endpoint, exact share, masquerade, verdict). A failure prints the paths."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import CASES, ROOT

from kptrace.load import load_dumps
from kptrace.model.addr import format_addr, parse_endpoint
from kptrace.tracer.defaults import plan_packet, resolve_affinity, trace_packet
from kptrace.tracer.packet import Origin

FILES = sorted((CASES / "flows").glob("*.toml"))


def _cases():
    for f in FILES:
        data = tomllib.loads(f.read_text())
        for case in data["case"]:
            yield pytest.param(f, data, case, id=f"{f.stem}::{case['name']}")


_LOADED: dict = {}


def _dataplane(f: Path, data: dict):
    if f not in _LOADED:
        _LOADED[f] = load_dumps([str(ROOT / d) for d in data["dump"]], node_ips=data.get("node_ips", []))
    return _LOADED[f]


def _prob(text) -> Fraction:
    return Fraction(str(text))


@pytest.mark.parametrize("path,data,case", list(_cases()))
def test_flow(path, data, case):
    dp = _dataplane(path, data)
    fam, addr, port = parse_endpoint(case["dst"])
    plan = plan_packet(dp, format_addr(fam, addr), port, src=case.get("src"),
                       origin=Origin(case["from"]) if "from" in case else None, proto=case.get("proto", "tcp"))
    affinity = resolve_affinity(dp, fam, case["affinity"]) if "affinity" in case else frozenset()
    trace = trace_packet(dp, plan, affinity=affinity)
    got = [(o.dnat, o.verdict, o.masquerade, o.probability) for o in trace.outcomes]

    def explain() -> str:
        lines = [f"packet {trace.packet}"]
        for o in trace.outcomes:
            lines.append(f"  {float(o.probability):.6f} {o.verdict} dnat={o.dnat} masq={o.masquerade} assumed={list(o.assumptions)}")
            for s in o.path:
                lines.append(f"      {s.hook:<11} {s.table}/{s.chain} #{s.rule}: {s.text}")
        return "\n".join(lines)

    expected = case["expect"]
    assert len(got) == len(expected), f"expected {len(expected)} outcomes\n{explain()}"
    for exp in expected:
        match = [g for g in got if g[0] == exp.get("dnat") and g[1] == exp.get("verdict", "ACCEPT")]
        assert match, f"no outcome {exp}\n{explain()}"
        dnat, verdict, masq, p = match[0]
        if "masq" in exp:
            assert masq == exp["masq"], f"masquerade for {dnat}: expected {exp['masq']}\n{explain()}"
        assert abs(float(p) - float(_prob(exp["probability"]))) < 1e-6, f"probability of {dnat}: {float(p)}\n{explain()}"
    assert sum(o.probability for o in trace.outcomes) == 1
    if "assumed" in case:
        assert trace.assumed == case["assumed"], explain()
    if "paths" in case:
        assert sum(o.path_count for o in trace.outcomes) == case["paths"], explain()
    if "reason" in case:
        assert any(case["reason"] in o.reason for o in trace.outcomes), explain()
