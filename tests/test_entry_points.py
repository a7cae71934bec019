"""The entry-point kind of a jump into a Service's chains is decided once (model.kube.entry_point_kind), so the
tracer's Service view and the drift check's reading of the rules agree on every spelling kube-proxy has used.

Cases: tests/cases/entry_points/*.rules, each naming its kind in its first line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kptrace.checks.programmed import programmed
from kptrace.load import load_texts
from kptrace.model.kube import ENTRY_POINT_KINDS, entry_point_kind
from kptrace.model.source import SourceText
from kptrace.tracer.services import service_views

CASES = sorted((Path(__file__).parent / "cases" / "entry_points").glob("*.rules"), key=lambda p: p.name)


def _kind(path: Path) -> str | None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# kind: "), f"{path.name}: the first line names the kind"
    kind = first.removeprefix("# kind: ").split()[0]
    return None if kind == "none" else kind


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_tracer_and_drift_check_give_the_same_kind(path):
    want = _kind(path)
    assert want is None or want in ENTRY_POINT_KINDS
    dp = load_texts([SourceText(path.name, path.read_text())], node_ips=["10.0.0.5"])
    read = [e.kind for p in programmed(dp).ports.values() for e in p.entries]
    assert read == ([want] if want else []), f"checks/programmed.py read {read} from {path.name}"
    if want is None:
        return
    views = service_views(dp, "ns/web:http")
    traced = [e.kind for v in views for e in v.entry_points if e.kind != "HealthCheckNodePort"]
    assert traced == [want], f"the tracer's Service view gave {traced} for {path.name}"


def test_the_cases_cover_every_kind():
    assert {_kind(p) for p in CASES} - {None} == set(ENTRY_POINT_KINDS)


@pytest.mark.parametrize("comment", ["ns/web:http loadbalancer IP", "ns/web:http LoadBalancer IP",
                                     "ns/web:http LOADBALANCER IP"])
def test_case_of_the_comment_does_not_matter(comment):
    assert entry_point_kind("KUBE-SERVICES", "KUBE-SVC-X", comment, "198.51.100.1") == "LoadBalancerIP"
