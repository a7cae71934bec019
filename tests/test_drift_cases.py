"""Table-driven drift scenarios: each file in cases/drift/ names a cluster state, a node's dumps and
the node name, and lists the findings ``kptrace drift`` must report (``exact``: and no others). The
command runs as a user runs it; a failure prints every finding with its detail."""

from __future__ import annotations

import json
import sys
import tomllib

import pytest
from conftest import CASES, ROOT

from kptrace.cli.main import main

FILES = sorted((CASES / "drift").glob("*.toml"))


def _key(f: dict) -> tuple:
    return (f["kind"], f["service"], f.get("endpoint"), f.get("entry"))


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_drift_case(path, capsys, monkeypatch):
    case = tomllib.loads(path.read_text())
    monkeypatch.chdir(ROOT)
    args = ["drift", "--cluster-state", case["cluster"], "--node-name", case["node"], "--output", "json", *case.get("args", [])]
    for d in case["dumps"]:
        args += ["--dump", d]
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    report = json.loads(out)
    got = {_key(f) for f in report["findings"]}
    want = {(f["kind"], f["service"], f.get("endpoint"), f.get("entry")) for f in case.get("finding", [])}

    def explain() -> str:
        return "\n".join(f"  {f['kind']:<22} {f['service']:<28} {f.get('endpoint') or f.get('entry') or '':<26} {f['detail']}"
                         for f in report["findings"]) or "  (no findings)"

    missing = want - got
    assert not missing, f"{path.name}: expected findings not reported: {sorted(missing, key=str)}\nreported:\n{explain()}"
    if case.get("exact", True):
        extra = got - want
        assert not extra, f"{path.name}: unexpected findings: {sorted(extra, key=str)}\nreported:\n{explain()}"
    assert code == (1 if report["findings"] else 0), err
    print(explain(), file=sys.stderr)
