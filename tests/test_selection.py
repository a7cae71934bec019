"""kube-proxy's endpoint selection (kptrace.checks.selection) against a table of cases.

The cases live in ``tests/cases/selection/*.toml``: kube-proxy's own ``TestCategorizeEndpoints``
(pkg/proxy/topology_test.go, one file per stored commit, same case names and inputs) plus cases
written from the rules in docs/kube-proxy.md section 5. Each ``[[case]]``:

* ``name``, ``source`` (where the case comes from), optional ``note``;
* ``node`` (default "node1"), ``zone`` (the node's topology.kubernetes.io/zone label, "" if none);
* ``profile``: a version string for ``profile_for_version`` ("current", "1.29", ...) or a table
  ``{ base = "<version>", <Profile field> = <value>, ... }`` for a feature-gate situation;
* ``topology_allowed`` (default true), ``policy`` (PortPolicy fields);
* ``endpoints``: ``{ ip, port, ready, serving, terminating, local, zone_hints, node_hints }``, the
  conditions defaulting as kube-proxy stores them (ready/serving true, terminating/local false);
* ``cluster`` / ``local``: the expected ip:port list, or "nil" for Go's nil (policy never used);
  ``[]`` means used but nothing qualifies;
* ``all_reachable`` (ip:port list) and ``has_any``.

Lists compare as sorted lists, so a duplicated endpoint fails as it does in Go's checkExpectedEndpoints.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from conftest import CASES

from kptrace.checks.selection import Endpoint, PortPolicy, Profile, categorize_endpoints, profile_for_version

SELECTION = CASES / "selection"
FILES = sorted(SELECTION.glob("*.toml"))

CASE_KEYS = {"name", "source", "note", "node", "zone", "profile", "topology_allowed", "policy", "endpoints",
             "cluster", "local", "all_reachable", "has_any"}
REQUIRED = {"name", "source", "policy", "endpoints", "cluster", "local", "all_reachable", "has_any"}
ENDPOINT_KEYS = {"ip", "port", "ready", "serving", "terminating", "local", "zone_hints", "node_hints"}
POLICY_KEYS = {f.name for f in dataclasses.fields(PortPolicy)}
PROFILE_KEYS = {f.name for f in dataclasses.fields(Profile)}


def _load() -> list[tuple[Path, dict]]:
    out = []
    for path in FILES:
        with path.open("rb") as f:
            data = tomllib.load(f)
        assert set(data) == {"case"}, f"{path.name}: only [[case]] tables expected, got {sorted(data)}"
        out.extend((path, c) for c in data["case"])
    return out


ALL_CASES = _load()


def _id(item: tuple[Path, dict]) -> str:
    path, c = item
    return f"{path.stem}::{c.get('name', '?')}"


def test_case_files_are_well_formed():
    assert FILES, f"no case files under {SELECTION}"
    seen: set[str] = set()
    for item in ALL_CASES:
        path, c = item
        where = _id(item)
        assert REQUIRED <= set(c), f"{where}: missing {sorted(REQUIRED - set(c))}"
        assert set(c) <= CASE_KEYS, f"{where}: unknown keys {sorted(set(c) - CASE_KEYS)}"
        assert where not in seen, f"duplicate case {where}"
        seen.add(where)
        assert set(c["policy"]) <= POLICY_KEYS, f"{where}: unknown policy keys"
        for e in c["endpoints"]:
            assert {"ip", "port"} <= set(e) and set(e) <= ENDPOINT_KEYS, f"{where}: bad endpoint {e}"
        for key in ("cluster", "local"):
            assert c[key] == "nil" or isinstance(c[key], list), f"{where}: {key} must be a list or \"nil\""
        assert isinstance(c["all_reachable"], list) and isinstance(c["has_any"], bool), where
        if isinstance(c.get("profile"), dict):
            assert set(c["profile"]) - {"base"} <= PROFILE_KEYS, f"{where}: unknown profile keys"
        if path.stem.startswith("go-"):
            # A mirrored Go case carries the Go case's own name in its source.
            assert c["source"].startswith("pkg/proxy/topology_test.go@"), where
            assert c["source"].endswith("TestCategorizeEndpoints/" + c["name"]), where


def _profile(spec) -> Profile:
    if spec is None or isinstance(spec, str):
        return profile_for_version(spec)
    spec = dict(spec)
    base = profile_for_version(spec.pop("base", None))
    return dataclasses.replace(base, **spec)


def _endpoint(e: dict) -> Endpoint:
    return Endpoint(e["ip"], e["port"], ready=e.get("ready", True), serving=e.get("serving", True),
                    terminating=e.get("terminating", False), local=e.get("local", False),
                    zone_hints=frozenset(e.get("zone_hints", ())), node_hints=frozenset(e.get("node_hints", ())))


def _addresses(eps) -> list[str] | str:
    return "nil" if eps is None else sorted(e.address for e in eps)


def _expected(v) -> list[str] | str:
    return v if v == "nil" else sorted(v)


@pytest.mark.parametrize("item", ALL_CASES, ids=_id)
def test_categorize_endpoints(item):
    _, c = item
    sel = categorize_endpoints(
        tuple(_endpoint(e) for e in c["endpoints"]),
        PortPolicy(**c["policy"]),
        c.get("node", "node1"),
        c.get("zone", ""),
        topology_allowed=c.get("topology_allowed", True),
        profile=_profile(c.get("profile")),
    )
    got = {"cluster": _addresses(sel.cluster), "local": _addresses(sel.local),
           "all_reachable": _addresses(sel.all_reachable), "has_any": sel.has_any}
    want = {"cluster": _expected(c["cluster"]), "local": _expected(c["local"]),
            "all_reachable": sorted(c["all_reachable"]), "has_any": c["has_any"]}
    assert got == want, f"{c['source']}" + (f"\n  note: {c['note']}" if c.get("note") else "")
    # nil is None and nothing else; a used list is a tuple (possibly empty)
    for key in ("cluster", "local"):
        value = getattr(sel, key)
        assert value is None or isinstance(value, tuple), f"{key}: {type(value).__name__}"
    assert sel.all_reachable is not None
