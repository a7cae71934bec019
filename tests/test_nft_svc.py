"""`kptrace svc` in nftables mode, over every nft fixture form: each Service port the cluster has is found,
with the endpoints kube-proxy selects for the node, exact traced shares, policies and warnings; the
forms of one ruleset (knftables text, `nft list ruleset` with and without handles, `nft -j`) give the
same views; every query form finds the port; counters give the observed split where the layout allows."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from conftest import ROOT

from kptrace.checks.counters import observed_shares
from kptrace.checks.expected import expected_ports
from kptrace.cli.main import main
from kptrace.load import load_dumps
from kptrace.parsers.cluster_state import parse_cluster_state
from kptrace.tracer.services import all_service_views, service_views

NFT = ROOT / "fixtures" / "nft"
FORMS = sorted(p for p in NFT.iterdir() if p.suffix in (".nft", ".knft", ".json") and not p.name.endswith(".cluster.json"))


def _cluster_of(path) -> str:
    kind = path.name.split("-", 1)[0]
    return "overall" if kind == "mixed" else kind


def _views(path):
    return all_service_views(load_dumps([str(path)]))


def _shape(v):
    """A view without where it was read from (line numbers and handles differ between forms)."""
    return (v.name, v.protocol, v.family, v.chains, tuple((e.kind, e.address, e.port, e.via) for e in v.entry_points),
            tuple((e.address, e.chain, e.probability, e.local) for e in v.endpoints), v.source_ranges, v.internal_policy,
            v.external_policy, v.affinity_timeout, len(v.traces),
            tuple(sorted((t.entry.kind, t.label, o.verdict, o.dnat, o.masquerade, o.probability)
                         for t in v.traces for o in t.trace.outcomes)))


@pytest.mark.parametrize("path", FORMS, ids=[p.name for p in FORMS])
def test_every_service_port_with_the_endpoints_kube_proxy_selects(path):
    views = _views(path)
    state = parse_cluster_state((NFT / f"{_cluster_of(path)}.cluster.json").read_text(), "cluster.json")
    by_name = {(v.name, v.family): v for v in views}
    want_names = set()
    for fam in sorted({v.family for v in views}):
        expected, _ = expected_ports(state, "node1", fam)
        for e in expected:
            want_names.add((e.spn, fam))
            v = by_name.get((e.spn, fam))
            assert v is not None, f"{e.spn} IPv{fam} not found in {path.name}"
            assert v.protocol == e.protocol
            want = {x.address for x in (e.cluster_chain_endpoints or ())} | {x.address for x in (e.local_chain_endpoints or ())}
            assert {x.address for x in v.endpoints} == want, v.name
            if e.local_chain_endpoints:
                assert {x.address for x in v.endpoints if x.local} == {x.address for x in e.local_chain_endpoints}
            cluster = [x for x in v.endpoints if x.probability is not None]
            if cluster and any(ep.kind == "ClusterIP" and "local-" not in ep.via for ep in v.entry_points):
                assert sum(x.probability for x in cluster) == 1
                assert all(x.probability == Fraction(1, len(cluster)) for x in cluster), v.name
            assert v.affinity_timeout == e.affinity_timeout
    assert set(by_name) == want_names


@pytest.mark.parametrize("scenario", sorted({p.name.split(".")[0] for p in FORMS if ".counters" not in p.name}))
def test_every_form_gives_the_same_views(scenario):
    forms = [p for p in FORMS if p.name.split(".")[0] == scenario and ".counters" not in p.name
             and not (scenario.startswith("mixed") and p.suffix == ".knft")]  # a mixed node's .knft is kube-proxy's table alone
    assert len(forms) >= 3  # .knft, .nft, .handles.nft, .json
    shapes = {p.name: [_shape(v) for v in _views(p)] for p in forms}
    first = next(iter(shapes.values()))
    assert first
    for name, s in shapes.items():
        assert s == first, name


QUERIES = [
    ("ns5/svc5", "ns5/svc5:p80"), ("ns5/svc5:p80", "ns5/svc5:p80"), ("ns5/svc5:80", "ns5/svc5:p80"),
    ("172.30.0.45", "ns5/svc5:p80"), ("172.30.0.45:80", "ns5/svc5:p80"), ("198.18.0.5:80", "ns5/svc5:p80"),
    ("service-HVFWP5L3-ns5/svc5/tcp/p80", "ns5/svc5:p80"), ("external-HVFWP5L3-ns5/svc5/tcp/p80", "ns5/svc5:p80"),
    ("endpoint-QR2OSYWX-ns5/svc5/tcp/p80__10.180.0.5/80", "ns5/svc5:p80"),
    ("ns12/svc12:dns", "ns12/svc12:dns"), ("172.30.0.52:53", "ns12/svc12:dns"),
    ("172.30.0.51", "ns11/svc11:p80"),  # no endpoints: found by its no-endpoint-services element
]


# 1.37 has no endpoint chains for a Service without affinity (its dnat maps straight to the endpoints)
CASES = [(q, n, lay) for lay in ("classic", "1.37") for q, n in QUERIES if not (lay == "1.37" and q.startswith("endpoint-"))]


@pytest.mark.parametrize("query,name,layout", CASES, ids=[f"{lay}:{q}" for q, _, lay in CASES])
def test_every_query_form_finds_the_port(query, name, layout):
    views = service_views(load_dumps([str(NFT / f"overall-{layout}.nft")]), query)
    assert [v.name for v in views] == [name]


def test_not_found_is_an_error(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:
        main(["svc", "ns404/nothing", "--dump", "fixtures/nft/overall-1.37.nft"])
    assert e.value.code == 4
    assert "no rules for ns404/nothing" in capsys.readouterr().err


def test_warnings_name_the_map_element():
    dp = load_dumps([str(NFT / "overall-classic.nft")])
    (v11,) = service_views(dp, "ns11/svc11")
    assert any("REJECT — the Service has no endpoints" in w and "overall-classic.nft:" in w for w in v11.warnings)
    assert {(t.entry.kind, o.verdict) for t in v11.traces for o in t.trace.outcomes} >= {("ClusterIP", "REJECT")}
    (v7,) = service_views(dp, "ns7/svc7")
    assert any(w.startswith("NodePort *:3007: DROP — the Service has no local endpoints") for w in v7.warnings)
    assert v7.external_policy == "Local"
    ext = [o for t in v7.traces if t.entry.kind == "NodePort" and t.label == "external" for o in t.trace.outcomes]
    assert ext and all(o.verdict == "DROP" for o in ext)
    (v13,) = service_views(dp, "ns13/svc13")
    assert v13.internal_policy == "Local" and any("no local endpoints" in w for w in v13.warnings)


@pytest.mark.parametrize("layout", ["classic", "1.37"])
def test_masquerade_reasons(layout):
    from kptrace.tracer.kubeproxy import masquerade_reason

    dp = load_dumps([str(NFT / f"overall-{layout}.nft")])
    (v,) = service_views(dp, "ns4/svc4")
    why = {(t.entry.kind, t.label): masquerade_reason(o)[1] for t in v.traces for o in t.trace.outcomes}
    assert why[("ClusterIP", "pod")] == ""
    assert why[("ClusterIP", "node")] == "source outside the pod CIDR 10.0.0.0/8"
    assert why[("NodePort", "external")].startswith("external destination")


def test_counters_give_the_observed_split_in_the_classic_layout():
    path = NFT / "overall-classic.counters.nft"
    dp = load_dumps([str(path)])
    (v,) = service_views(dp, "ns2/svc2")
    report = observed_shares(dp, v)
    lines = path.read_text().splitlines()
    for ep in report.endpoints:
        n = int(ep.location.rsplit(":", 1)[1])
        assert f"counter packets {ep.connections} " in lines[n - 1] and "dnat to " + ep.address in lines[n - 1]
    assert report.total == sum(ep.connections for ep in report.endpoints) > 0


def test_counters_of_a_shared_dnat_rule_are_not_split():
    dp = load_dumps([str(NFT / "overall-1.37.counters.nft")])
    (v,) = service_views(dp, "ns2/svc2")
    report = observed_shares(dp, v)
    assert report is not None and report.total == 0 and not report.skewed
    assert all(ep.connections is None for ep in report.endpoints)
    assert any("not observable" in n for n in report.notes)


def test_svc_json_in_nftables_mode(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:
        main(["svc", "ns6/svc6", "--dump", "fixtures/nft/ipv6-1.37.json", "-o", "json"])
    assert e.value.code in (0, None)
    (s,) = json.loads(capsys.readouterr().out)["services"]
    assert s["family"] == 6 and s["traffic_policy"] == {"internal": "Cluster", "external": "Local"}
    assert {e["address"]: e["local"] for e in s["endpoints"]} == {"[fd00:10::180:0:6]:80": True, "[fd00:10::180:1:6]:80": False}
