"""One walk of FORWARD and POSTROUTING for a Service's endpoints (tracer/engine.py ``_shared_walks``, nft replay in
tracer/nft.py): sharing must never change a trace, and must happen where the endpoints are treated alike.

Every flow of every fixtures/nft scenario is traced twice, with the shared walks and with one walk per endpoint
(``Tracer.share_walks = False``, the walk the kernel-backed tests check), and the two traces must be equal in
everything: verdicts, shares, rewrites, the rule path and the assumptions. ``tests/cases/nft_shared/`` holds two
hand-made rulesets: one whose FORWARD treats each endpoint differently (a set, a concatenation), one whose FORWARD
treats them alike (sharing walks FORWARD once there).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from conftest import FIXTURES

from kptrace.load import load_dumps
from kptrace.model.addr import format_addr, parse_endpoint
from kptrace.tracer import engine
from kptrace.tracer.defaults import plan_packet, trace_packet
from kptrace.tracer.packet import Origin

CASES = Path(__file__).parent / "cases" / "nft_shared"
NFT = FIXTURES / "nft"
_ORIGIN = {"pod": Origin.POD, "hairpin": Origin.POD, "node": Origin.NODE, "external": Origin.EXTERNAL,
           "external-denied": Origin.EXTERNAL}


def _both(dp, plan, monkeypatch):
    """The trace with shared walks and the trace with one walk per state, as comparable values."""
    def outcomes(trace):
        return [(o.verdict, o.dnat, o.probability, o.masquerade, o.snat, tuple(o.path), tuple(o.assumptions), o.reason)
                for o in trace.outcomes]
    shared = outcomes(trace_packet(dp, plan))
    monkeypatch.setattr(engine.Tracer, "share_walks", False)
    try:
        alone = outcomes(trace_packet(dp, plan))
    finally:
        monkeypatch.setattr(engine.Tracer, "share_walks", True)
    return shared, alone


@pytest.mark.parametrize("scenario", sorted(p.name.removesuffix(".expect.toml") for p in NFT.glob("*.expect.toml")))
def test_sharing_changes_no_trace_of_a_fixture(scenario, monkeypatch):
    data = tomllib.loads((NFT / f"{scenario}.expect.toml").read_text())
    node_ips = [data[k]["node_ip"] for k in ("ipv4", "ipv6") if k in data]
    dp = load_dumps([str(NFT / f"{scenario}.nft")], node_ips=node_ips)
    differ = []
    for flow in data["flow"]:
        fam, addr, port = parse_endpoint(flow["dst"])
        plan = plan_packet(dp, format_addr(fam, addr), port, src=flow["src"], origin=_ORIGIN[flow["origin"]],
                           proto=flow.get("protocol", "tcp"))
        shared, alone = _both(dp, plan, monkeypatch)
        if shared != alone:
            differ.append(f"{flow['dst']} from {flow['origin']} {flow['src']}:\n  shared {shared}\n  alone  {alone}")
    assert not differ, "\n".join(differ[:5])


def _walks(monkeypatch, dp, plan) -> tuple[list, int]:
    """The outcomes of one trace, and how many times the filter chain at FORWARD was walked."""
    calls = []
    real = engine.Tracer._table

    def counting(self, st, table, base, hook):
        if hook == "FORWARD":
            calls.append(table)
        return real(self, st, table, base, hook)

    monkeypatch.setattr(engine.Tracer, "_table", counting)
    trace = trace_packet(dp, plan)
    return [(o.verdict, o.dnat) for o in trace.outcomes], len(calls)


def test_endpoints_treated_differently_are_walked_apart(monkeypatch):
    dp = load_dumps([str(CASES / "forward-per-endpoint.nft")], node_ips=["192.168.0.2"])
    plan = plan_packet(dp, "172.30.0.10", 80, src="10.1.0.5")
    got, walks = _walks(monkeypatch, dp, plan)
    assert sorted(got) == [("ACCEPT", "10.0.0.1:8080"), ("DROP", "10.0.0.3:8081"), ("REJECT", "10.0.0.2:8080")]
    assert walks == 3
    shared, alone = _both(dp, plan, monkeypatch)
    assert shared == alone


def test_endpoints_treated_alike_share_one_walk(monkeypatch):
    dp = load_dumps([str(CASES / "forward-same.nft")], node_ips=["192.168.0.2"])
    plan = plan_packet(dp, "172.30.0.10", 80, src="10.1.0.5")
    got, walks = _walks(monkeypatch, dp, plan)
    assert sorted(got) == [("ACCEPT", "10.0.0.1:8080"), ("ACCEPT", "10.0.0.2:8080"), ("ACCEPT", "10.0.0.3:8080")]
    assert walks == 1  # the endpoints' FORWARD walks were shared
    shared, alone = _both(dp, plan, monkeypatch)
    assert shared == alone
    assert all(o[3] for o in shared)  # masqueraded by POSTROUTING, each
