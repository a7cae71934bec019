"""`kptrace diff` against the kernel: both sides of a pair are replayed in real netfilter (the verify lab,
network namespaces) for every probe diff reports changed and a sample of those it reports unchanged. The
kernel must do what kptrace predicts on each side; then diff's changed / unchanged is the kernel's too
(its comparison is of exactly those predictions). Needs root; CI runs it (a skip is a failure there)."""

from __future__ import annotations

import random

import pytest

from kptrace.checks.diff import diff_dataplanes
from kptrace.lab.verify import VerifyPacket, run_verify
from kptrace.load import load_dumps
from kptrace.tracer.defaults import ASSUMED_NODE_IP, plan_packet
from kptrace.tracer.packet import Origin

from conftest import FIXTURES, require_netns

CONFIDENCE = 0.99999
NODE = ["192.168.0.2"]

PAIRS = [
    # (id, before dumps, after dumps, node addresses)
    ("iptables-topology-hints", ["samples/yaobank-modern.rules"], ["drift/yaobank/topology-zone-a.rules"], ["10.240.0.11"]),
]


def _packets(dp, probes) -> list[VerifyPacket]:
    out = []
    for probe in probes:
        fam = probe.family
        node_ips = dp.node_ips_of(fam)
        dst = probe.address or (node_ips[0] if node_ips else ASSUMED_NODE_IP[fam])
        plan = plan_packet(dp, dst, probe.port, origin=Origin(probe.origin), proto=probe.protocol, src=probe.source)
        out.append(VerifyPacket(f"{probe.protocol} {dst}:{probe.port} from {probe.origin}", plan))
    return out


def _kernel_agrees(dp, probes) -> None:
    results = run_verify(dp, _packets(dp, probes), confidence=CONFIDENCE)
    bad = [f"{r.label}: {'; '.join(r.problems)}" for r in results if r.status == "disagree"]
    assert not bad, "kernel and kptrace disagree:\n" + "\n".join(bad)
    assert all(r.status == "agree" for r in results), [(r.label, r.status) for r in results]


@pytest.mark.parametrize("case", PAIRS, ids=[c[0] for c in PAIRS])
def test_diff_is_what_the_kernel_does_on_each_side(case):
    require_netns("iptables-nft-restore", "conntrack")
    _id, before, after, node_ips = case
    b = load_dumps([str(FIXTURES / f) for f in before], node_ips=node_ips)
    a = load_dumps([str(FIXTURES / f) for f in after], node_ips=node_ips)
    report = diff_dataplanes(b, a, full=True)
    changed = [c.probe for c in report.changes]
    assert changed, "the pair must differ somewhere"
    from kptrace.checks.diff import entry_points

    keys = sorted(set(entry_points(b)[0]) | set(entry_points(a)[0]), key=str)
    unchanged = [p for p in _all_probes(keys) if p not in changed]
    sample = random.Random(7).sample(unchanged, min(6, len(unchanged)))
    for dp in (b, a):
        _kernel_agrees(dp, changed + sample)


def _all_probes(keys):
    from kptrace.checks.diff import Probe

    for fam, proto, addr, port in keys:
        for origin in ("pod", "node"):
            yield Probe(fam, proto, addr, port, origin)
