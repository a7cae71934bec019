"""The differential suite in nftables mode: every fixtures/nft scenario (both kube-proxy layouts, IPv6,
dual-stack, a mixed iptables-nft + nft node), in each form that reads differently (kube-proxy's knftables
transaction, `nft -j` JSON; a mixed node as its iptables-save with its `nft list ruleset`, and as the listing
alone), replayed in real netfilter by `kptrace verify`: the ruleset loaded with `nft -f`, the probe traced with
`nft monitor trace`, and the kernel must do what kptrace predicts (path, outcomes, shares within a binomial
bound, masquerade, REJECT/DROP). Needs root; CI runs it (a skip is a failure there).

The packets are the flows of NAME.expect.toml (what make_nft.py --check sent through the kernel): all of them
for kube-proxy's own form of overall-1.37 and for mixed-1.37 given as iptables-save + nft; for the other forms
one flow per entry point, the origins taken in turn (the same rules, read from another spelling: the
rule-by-rule path checks that each was read and placed right). The classic layout's every entry point, from
each origin, is the `--all-services` case (packets kptrace derives itself, on an `nft -a` listing). Few
connections per flow (CONNECTIONS): a flow has at most three outcomes, so a share of 1/3 expects 10 of 30, and
the band at 99.999% still fails a missing or never-taken endpoint; make_nft.py --check and
tests/test_differential.py measure shares with more.
"""

from __future__ import annotations

import tomllib

import pytest
from conftest import FIXTURES, require_netns

from kptrace.lab.verify import VerifyPacket, packets_for_all_services, run_verify
from kptrace.load import load_dumps
from kptrace.model.addr import format_addr, parse_endpoint
from kptrace.tracer.defaults import plan_packet
from kptrace.tracer.packet import Origin

pytestmark = pytest.mark.netns  # every test here runs in network namespaces (root)

NFT = FIXTURES / "nft"
SCENARIOS = sorted(p.name.removesuffix(".expect.toml") for p in NFT.glob("*-*.expect.toml"))
CONFIDENCE = 0.99999
CONNECTIONS = 30
_ORIGIN = {"pod": Origin.POD, "hairpin": Origin.POD, "node": Origin.NODE, "external": Origin.EXTERNAL,
           "external-denied": Origin.EXTERNAL}


#: (scenario, form) -> every flow; the rest: one flow per entry point
EVERY_FLOW = {("overall-1.37", ".knft"), ("mixed-1.37", "iptables-save+nft")}


def _forms(scenario: str) -> list[tuple[str, list[str]]]:
    if scenario.startswith("mixed"):
        # The CNI's tables as iptables-save with the whole listing (the iptables-nft tables in it give way to the
        # iptables-save, which shows the physdev match nft shows only by name), and the listing alone.
        forms = [("iptables-save+nft", [f"{scenario}.iptables-save", f"{scenario}.nft"]), (".nft", [f"{scenario}.nft"])]
        if scenario == "mixed-1.37":  # nft -j shows more of iptables-nft's rules as xt: those paths are unverifiable
            forms.append((".json", [f"{scenario}.json"]))
        return forms
    return [(".knft", [f"{scenario}.knft"]), (".json", [f"{scenario}.json"])]


def _entry_points(flows: list[dict]) -> list[dict]:
    """One flow per entry point (Service, kind, destination), from pod, node, external, hairpin in turn."""
    by_entry: dict[tuple, list[dict]] = {}
    for f in flows:
        by_entry.setdefault((f.get("service"), f["kind"], f["dst"], f.get("protocol")), []).append(f)
    order = ("pod", "node", "external", "hairpin")
    out = []
    for i, group in enumerate(by_entry.values()):
        want = order[i % len(order)]
        out.append(next((f for f in group if f["origin"] == want), group[0]))
    return out


def _packets(dp, flows) -> list[VerifyPacket]:
    out = []
    for flow in flows:
        fam, addr, port = parse_endpoint(flow["dst"])
        plan = plan_packet(dp, format_addr(fam, addr), port, src=flow["src"], origin=_ORIGIN[flow["origin"]],
                           proto=flow.get("protocol", "tcp"))
        out.append(VerifyPacket(f"{flow.get('service', '-')} {flow['kind']} {flow['dst']} {flow.get('protocol', 'tcp')} "
                                f"from {flow['origin']} {flow['src']}", plan))
    return out


@pytest.mark.parametrize("scenario,form,files", [pytest.param(s, form, files, id=f"{s}{form if form[0] == '.' else '+' + form}")
                                                 for s in SCENARIOS for form, files in _forms(s)])
def test_nft_fixture_agrees_with_the_kernel(scenario, form, files):
    require_netns("nft", "conntrack", "iptables-nft-restore")
    data = tomllib.loads((NFT / f"{scenario}.expect.toml").read_text())
    node_ips = [data[k]["node_ip"] for k in ("ipv4", "ipv6") if k in data]
    dp = load_dumps([str(NFT / f) for f in files], node_ips=node_ips, full=True)
    flows = data["flow"] if (scenario, form) in EVERY_FLOW else _entry_points(data["flow"])
    results = run_verify(dp, _packets(dp, flows), connections=CONNECTIONS, confidence=CONFIDENCE)
    report = []
    for r in results:
        if r.status == "disagree":
            report.append(f"{r.label}: " + "; ".join(r.problems))
            report.extend(f"    kernel path: {step}" for step in r.kernel_path)
    assert not report, "kernel and kptrace disagree:\n" + "\n".join(report)
    # Unverifiable: only a connection the node opens to itself and rejects in INPUT (the kernel stops tracing
    # it before) and, from the listing alone, a path through a rule nft shows only by name (xt).
    for r in results:
        if r.status == "unverifiable":
            assert r.trace.packet.origin is Origin.NODE or "xt expression" in r.problems[0], (r.label, r.problems)
    agreed = [r for r in results if r.status == "agree"]
    if not (scenario.startswith("mixed") and form == ".json"):  # nft -j of a mixed node: most paths take an xt rule
        assert len(agreed) >= len(results) * 2 // 3, f"{len(agreed)} of {len(results)} flows agree"
    assert all(r.path_ok for r in agreed), [r.label for r in agreed if not r.path_ok]


def test_verify_cli_on_an_nft_listing(run):
    require_netns("nft", "conntrack", "iptables-nft-restore")
    code, out, err = run("verify", "--dump", "fixtures/nft/overall-1.37.nft", "--dst", "172.30.0.42:80", "-n", "60")
    assert code == 0, out + err
    assert "agree" in out and "0 disagree" in out
    assert "rule path of one probe: one of the predicted paths" in out


def test_every_service_entry_point_agrees_with_the_kernel():
    """`kptrace verify --all-services` on an `nft -a` listing: the packets kptrace derives from the ruleset itself
    (every entry point from each origin that reaches it), not the fixture's flows."""
    require_netns("nft", "conntrack", "iptables-nft-restore")
    dp = load_dumps([str(NFT / "overall-classic.handles.nft")], node_ips=["192.168.0.2"], full=True)
    packets = packets_for_all_services(dp)
    assert len(packets) >= 40
    results = run_verify(dp, packets, connections=CONNECTIONS, confidence=CONFIDENCE)
    report = [f"{r.label}: " + "; ".join(r.problems) for r in results if r.status == "disagree"]
    assert not report, "kernel and kptrace disagree:\n" + "\n".join(report)
    assert sum(r.status == "agree" for r in results) >= len(results) - 2
