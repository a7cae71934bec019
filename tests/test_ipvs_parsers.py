"""IPVS mode inputs: ipvsadm listings and ipvsadm-save, ipset save and ipset list.

Cases are data, in tests/cases/ipvs/:

* ``ok/*.toml``: an input (a fixture) and the values kptrace must read from it, written by reading the
  input, not by running the parser: every virtual service and real server (or set and member), and
  every diagnostic with its ``line:col``. A field left out is None (TOML has no null; ``""`` clears a
  default). ``[defaults.*]`` fill fields common to most entries, and ``base`` takes another case's
  services with some fields dropped or set (a listing variant shows other columns of the same node),
  ``[[change]]`` then changing single entries.
* ``errors/*.toml`` beside their inputs: what a bad input gives, as ``file:line:col`` and message.
* ``detect.toml``: the format every input is recognised as.
"""

from __future__ import annotations

import doctest
import random
import time
import tomllib
from pathlib import Path

import pytest
from conftest import CASES, ROOT

import kptrace.model.ipvs
import kptrace.parsers.detect
import kptrace.parsers.ipset
import kptrace.parsers.ipvsadm
import kptrace.parsers.ipvsadm.grammar
import kptrace.parsers.linereader
from kptrace.errors import ParseError, format_diagnostic
from kptrace.model.ipvs import IPSet, IPSets, IPVSTable, MemberError, RealServer, VirtualService, canonical_member
from kptrace.parsers.detect import VARIANTS, detect_format, detect_variant
from kptrace.parsers.ipset import parse_ipset
from kptrace.parsers.ipvsadm import parse_ipvsadm, scheduler_info

IPVS_CASES = CASES / "ipvs"
OK = sorted((IPVS_CASES / "ok").glob("*.toml"))
ERRORS = sorted((IPVS_CASES / "errors").glob("*.toml"))
IPVS_FIXTURES = sorted((ROOT / "fixtures" / "ipvs").glob("*.ipvsadm*")) + sorted((ROOT / "fixtures" / "realworld").glob("*.ipvsadm"))
IPSET_FIXTURES = sorted((ROOT / "fixtures" / "ipvs").glob("*.ipset-*")) + sorted((ROOT / "fixtures" / "realworld").glob("*.ipset"))


def _load(path: Path) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _parse(case: dict, path: Path | None = None):
    text = (ROOT / case["input"]).read_text() if path is None else path.read_text()
    name = case["input"] if path is None else str(path.relative_to(ROOT))
    parser = parse_ipset if case["parser"] == "ipset" else parse_ipvsadm
    return parser(text, name, lenient=case.get("lenient", False))


# ---------------------------------------------------------------- projections: values -> plain data

def _empty(v) -> bool:
    """None, False, () and "": what a field holds when the input does not say (0 is a value)."""
    return v is None or v is False or (isinstance(v, (tuple, list, str, dict)) and not v)


def _plain(value) -> object:
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _real_server(rs: RealServer) -> dict:
    out = {k: _plain(v) for k, v in rs._asdict().items() if k not in ("location", "text") and not _empty(v)}
    out["line"] = rs.location.line
    return out


def _service(vs: VirtualService) -> dict:
    out = {k: _plain(v) for k, v in vs._asdict().items()
           if k not in ("location", "text", "real_servers") and not _empty(v)}
    out["line"] = vs.location.line
    out["real_servers"] = [_real_server(r) for r in vs.real_servers]
    return out


def _expected_services(case: dict) -> list[dict]:
    """The case's services, with its defaults filled in and, for a ``base`` case, the base's services changed."""
    if "base" in case:
        base = case["base"]
        services = _expected_services(_load(IPVS_CASES / "ok" / f"{base['case']}.toml"))
        drop_s, drop_r = set(base.get("drop_service", ())), set(base.get("drop_real_server", ()))
        set_s, set_r = base.get("set_service", {}), base.get("set_real_server", {})
        lines = iter(base.get("lines", ()))
        out = []
        for vs in services:
            vs = {k: v for k, v in vs.items() if k not in drop_s} | set_s
            if base.get("lines"):
                vs["line"] = next(lines)
            rss = []
            for rs in vs["real_servers"]:
                rs = {k: v for k, v in rs.items() if k not in drop_r} | set_r
                if base.get("lines"):
                    rs["line"] = next(lines)
                rss.append(rs)
            vs["real_servers"] = rss
            out.append(vs)
        # Per-entry changes, matched by the service's endpoint (and a real server's address and port).
        for change in case.get("change", ()):
            for vs in out:
                if (vs.get("protocol"), vs.get("address"), vs.get("port"), vs.get("fwmark")) == (
                        change.get("protocol"), change.get("address"), change.get("port"), change.get("fwmark")):
                    vs.update(change.get("service", {}))
                    for r in change.get("real_servers", ()):
                        for rs in vs["real_servers"]:
                            if (rs.get("address"), rs.get("port")) == (r["address"], r["port"]):
                                rs.update(r)
        return [_clean(vs) for vs in out]
    d_s = case.get("defaults", {}).get("service", {})
    d_r = case.get("defaults", {}).get("real_server", {})
    out = []
    for vs in case.get("service", ()):
        vs = d_s | vs
        vs["real_servers"] = [_clean(d_r | r) for r in vs.get("real_servers", ())]
        out.append(_clean(vs))
    return out


def _clean(d: dict) -> dict:
    return {k: v for k, v in d.items() if k == "real_servers" or not _empty(v)}


def _ipset(s: IPSet) -> dict:
    out = {"name": s.name, "type": s.type, "family": s.family, "options": dict(s.options), "members": sorted(s.members),
           "truncated": s.truncated, "expected_entries": s.expected_entries, "revision": s.revision,
           "line": s.location.line,
           "meta": {m: {k: _plain(v) for k, v in meta._asdict().items() if not _empty(v)}
                    for m, meta in s.members_with_meta.items()}}
    return {k: v for k, v in out.items() if not _empty(v) or k == "members"}


def _expected_ipsets(case: dict) -> list[dict]:
    if "base" in case:
        # The same sets as another case's, listed: with their revision, entry count and own lines.
        base = case["base"]
        sets = _load(IPVS_CASES / "ok" / f"{base['case']}.toml")["set"]
        case = {"set": [s | {"line": line, "revision": rev, "expected_entries": n}
                        for s, line, rev, n in zip(sets, base["lines"], base["revisions"], base["entries"], strict=True)]}
    out = []
    for s in case.get("set", ()):
        s = dict(s)
        s["members"] = sorted(s.get("members", ()))
        s["meta"] = {m: {k: (list(v) if isinstance(v, list) else v) for k, v in meta.items()} for m, meta in s.get("meta", {}).items()}
        out.append({k: v for k, v in s.items() if not _empty(v) or k == "members"})
    return out


def _diagnostics(result) -> list[dict]:
    return [{"severity": d.severity, "line": d.line, "col": d.col, "message": d.message} for d in result.diagnostics]


def _check_diagnostics(got: list, expected: list, where: str) -> None:
    assert [(d["severity"], d["line"], d["col"]) for d in got] == [(d["severity"], d["line"], d["col"]) for d in expected], where
    for g, e in zip(got, expected):
        assert e["message"] in g["message"], (where, g, e)


# ---------------------------------------------------------------- the cases

@pytest.mark.parametrize("path", OK, ids=lambda p: p.stem)
def test_fixture_reads_as_expected(path):
    case = _load(path)
    result = _parse(case)
    where = case["input"]
    _check_diagnostics(_diagnostics(result), case.get("diagnostics", []), where)
    for note in case.get("notes", ()):
        assert any(note in n for n in result.notes), (note, result.notes)
    if "variant" in case:
        assert result.variant == case["variant"]
    if case["parser"] == "ipset":
        assert [_ipset(s) for s in result] == _expected_ipsets(case)
        return
    assert result.numeric == case.get("numeric", True)
    assert result.version == case.get("version")
    got = [_service(vs) for vs in result]
    expected = _expected_services(case)
    assert len(got) == len(expected), [g.get("address") for g in got]
    for g, e in zip(got, expected):
        assert g == e


@pytest.mark.parametrize("path", ERRORS, ids=lambda p: p.stem)
def test_error_case(path):
    case = _load(path)
    input_path = path.with_name(case["input"])
    case["input"] = str(input_path.relative_to(ROOT))
    text = input_path.read_text()
    parser = parse_ipset if case["parser"] == "ipset" else parse_ipvsadm
    if case.get("raises", True):
        with pytest.raises(ParseError) as exc:
            parser(text, case["input"], lenient=False)
        diags = exc.value.diagnostics
        rendered = exc.value.render()
        assert "Traceback" not in rendered
        first = case["diagnostics"][0]
        assert rendered.startswith(f"{case['input']}:{first['line']}:{first['col']}: {first['severity']}: "), rendered
    else:
        diags = parser(text, case["input"], lenient=False).diagnostics
    _check_diagnostics([{"severity": d.severity, "line": d.line, "col": d.col, "message": d.message} for d in diags],
                       case["diagnostics"], case["input"])
    for d, e in zip(diags, case["diagnostics"]):
        if "hint" in e:
            assert e["hint"] in d.hint, (d, e)
    if case.get("lenient_reads") is not None:
        # --lenient keeps going and keeps what it could read.
        result = parser(text, case["input"], lenient=True)
        assert len(result) == case["lenient_reads"]


DETECT = _load(IPVS_CASES / "detect.toml")["input"]


@pytest.mark.parametrize("row", DETECT, ids=lambda r: r["path"].rsplit("/", 1)[-1])
def test_detection(row):
    text = (ROOT / row["path"]).read_text(errors="replace")
    expected = row["variant"] or None
    assert detect_variant(text) == expected
    assert detect_format(text) == (VARIANTS[expected][0] if expected else None)


def test_every_fixture_has_a_case_and_a_detection_row():
    inputs = {_load(p)["input"] for p in OK}
    detected = {r["path"] for r in DETECT}
    for f in IPVS_FIXTURES + IPSET_FIXTURES:
        rel = str(f.relative_to(ROOT))
        assert rel in inputs, f"no tests/cases/ipvs/ok case reads {rel}"
        assert rel in detected, f"tests/cases/ipvs/detect.toml has no row for {rel}"


# ---------------------------------------------------------------- invariants over every fixture

@pytest.mark.parametrize("path", IPVS_FIXTURES + IPSET_FIXTURES, ids=lambda p: p.name)
def test_every_value_keeps_its_line(path):
    parser = parse_ipset if path in IPSET_FIXTURES else parse_ipvsadm
    result = parser(path.read_text(), str(path), lenient=True)
    lines = path.read_text().split("\n")
    if isinstance(result, IPVSTable):
        for vs in result:
            assert vs.text == lines[vs.location.line - 1] and vs.location.source == str(path)
            for rs in vs.real_servers:
                assert rs.text == lines[rs.location.line - 1]
    else:
        for s in result:
            assert s.text == lines[s.location.line - 1]
            for m in s.members:
                line = lines[s.location_of(m).line - 1]
                element = line.split()[2] if result.variant == "save" else line.split()[0]
                assert canonical_member(element, s.dimensions) == m


def _line_kinds(path: Path):
    """(kind, variant, line) for each virtual service and real server line of a listing or save fixture."""
    table = parse_ipvsadm(path.read_text(), str(path), lenient=True)
    for vs in table:
        kind = "save_service" if table.variant == "save" else "service"
        yield kind, table.variant, vs.text, vs
        for rs in vs.real_servers:
            yield ("save_dest" if table.variant == "save" else "dest"), table.variant, rs.text, rs


@pytest.mark.parametrize("path", IPVS_FIXTURES, ids=lambda p: p.name)
def test_fast_path_agrees_with_the_grammar(path):
    """Each line the fast path read, the pyparsing grammar (the spec) reads too, to the same endpoint and columns."""
    for kind, variant, line, value in _line_kinds(path):
        grammar = kptrace.parsers.ipvsadm.line_grammar(kind, "default" if variant == "save" else variant)
        res = grammar.parse_string(line.strip(), parse_all=True)
        if "endpoint" in res:
            ep = next(o["real_server"] for o in res["options"] if "real_server" in o) if kind == "save_dest" else res["endpoint"]
            host = ep["host"]
            port = ep.get("port")
            if value.address is not None:
                assert host == value.address, line
            else:
                assert host == value.host_name, line
            assert (port if isinstance(port, int) else value.port) == value.port, line
            assert (port if isinstance(port, str) else value.port_name) == value.port_name, line
        if kind == "service" and value.scheduler is not None:
            assert res["scheduler"] == value.scheduler
            assert tuple(res.get("flags", ())) == value.flags
            assert res.get("persistent") == value.persistent
        if kind == "dest" and variant != "save":
            columns = kptrace.parsers.ipvsadm.ipvsadm_grammar().variants[variant].dest
            for name, _ in columns:
                if name.startswith(("stats.", "rates.")):
                    group, field = name.split(".")
                    got = getattr(getattr(value, group), field)
                    text = str(res[name])
                    approx = text[-1] in "KMGT"
                    assert got == (int(text[:-1]) * {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[text[-1]] if approx else int(text)), line
                elif name == "tunnel":
                    assert res[name] == (value.tunnel or "n/a"), line
                else:
                    assert res[name] == getattr(value, name), line


@pytest.mark.parametrize("path", IPSET_FIXTURES, ids=lambda p: p.name)
def test_ipset_fast_path_agrees_with_the_grammar(path):
    sets = parse_ipset(path.read_text(), str(path), lenient=True)
    lines = path.read_text().split("\n")
    for s in sets:
        kind = "create" if sets.variant == "save" else "header"
        kptrace.parsers.ipset.line_grammar(kind).parse_string(s.text, parse_all=True)
        for m in s.members:
            line = lines[s.location_of(m).line - 1]
            kind = "add" if sets.variant == "save" else "member"
            res = kptrace.parsers.ipset.line_grammar(kind, s.dimensions).parse_string(line, parse_all=True)
            assert res["member"] == m


def test_garbled_inputs_give_diagnostics_never_a_traceback():
    """Cut, doubled and mangled lines of every fixture: a ParseError or a result, nothing else."""
    rng = random.Random(11)
    for path in IPVS_FIXTURES + IPSET_FIXTURES:
        parser = parse_ipset if path in IPSET_FIXTURES else parse_ipvsadm
        lines = path.read_text().split("\n")
        for _ in range(40):
            mangled = list(lines)
            i = rng.randrange(len(mangled))
            op = rng.randrange(4)
            if op == 0:
                mangled[i] = mangled[i][: rng.randrange(len(mangled[i]) + 1)]
            elif op == 1:
                j = rng.randrange(len(mangled[i]) + 1)
                mangled[i] = mangled[i][:j] + rng.choice(["x", ":", " ", "[", "9", ",", '"', "-"]) + mangled[i][j:]
            elif op == 2:
                mangled.insert(i, mangled[rng.randrange(len(mangled))])
            else:
                del mangled[i]
            text = "\n".join(mangled)
            for lenient in (False, True):
                try:
                    result = parser(text, "mangled", lenient=lenient)
                except ParseError as e:
                    assert e.diagnostics and all(d.line >= 1 for d in e.diagnostics)
                    format_diagnostic(e.diagnostics[0])
                else:
                    assert isinstance(result, (IPVSTable, IPSets))


# ---------------------------------------------------------------- the API

def test_lookups():
    table = parse_ipvsadm((ROOT / "fixtures/ipvs/node1.ipvsadm").read_text(), "node1.ipvsadm")
    dns = table.virtual("udp", "10.96.0.10", 53)
    assert [r.endpoint for r in dns.real_servers] == ["10.244.1.2:53", "10.244.2.3:53"]
    assert table.virtual("TCP", "10.96.0.10", 53).protocol == "TCP"
    assert table.virtual("tcp", "10.96.0.10", 54) is None
    assert table.virtual("tcp", "not an address", 53) is None
    assert table.virtual("tcp", "FD00:10:96:0::5", 80).family == 6  # any spelling of the address
    assert table.virtual("tcp", "[fd00:10:96::5]", 80).endpoint == "[fd00:10:96::5]:80"
    cart = table.virtual("tcp", "10.96.112.40", 8080)
    assert cart.persistent == 10800 and [r.endpoint for r in cart.schedulable] == ["10.244.1.7:8080", "10.244.2.9:8080"]
    assert table.virtual("tcp", "203.0.113.10", 80).real_servers == ()
    assert len(list(table.iter_real_servers())) == 18
    features = parse_ipvsadm((ROOT / "fixtures/ipvs/features.ipvsadm").read_text(), "features.ipvsadm")
    assert features.by_fwmark(1).endpoint == "FWM 1"
    assert features.by_fwmark(2, family=6).scheduler == "sed"
    assert features.by_fwmark(2) is None
    assert scheduler_info("mh").kind == "hash" and scheduler_info("wrr").weighted and scheduler_info("nope") is None


def test_ipset_lookups():
    sets = parse_ipset((ROOT / "fixtures/ipvs/node1.ipset-save").read_text(), "node1.ipset-save")
    cluster = sets["KUBE-CLUSTER-IP"]
    assert cluster.contains("10.96.0.10,udp:53") and cluster.contains("10.96.0.10,UDP:0053")
    assert not cluster.contains("10.96.0.10,tcp:54")
    assert "10.96.0.1,tcp:443" in cluster and "garbage" not in cluster
    with pytest.raises(MemberError):
        cluster.contains("10.96.0.1")  # one part for a two-part type
    assert str(cluster.location_of("10.96.0.1,tcp:443")) == "node1.ipset-save:2"
    assert sets["KUBE-6-CLUSTER-IP"].contains("FD00:10:96:0:0::5,tcp:80")
    assert sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"].contains("203.0.113.10,tcp:80,198.51.100.9/24")  # host bits dropped
    assert sets["KUBE-NODE-PORT-TCP"].contains("tcp:31080") and sets["KUBE-NODE-PORT-TCP"].family is None
    features = parse_ipset((ROOT / "fixtures/ipvs/features.ipset-save").read_text(), "features.ipset-save")
    allow = features["allow-list"]
    assert allow.timeout == 3600 and allow.counters and allow.comment
    assert allow.meta("192.168.5.0/24").nomatch and allow.meta("10.1.2.3").comment == "one host, for good"
    assert allow.meta("10.0.0.0/8").packets == 10 and allow.meta("10.9.9.9").timeout is None
    assert "allow-list" in features and features.get("nope") is None and len(features) == 4


@pytest.mark.parametrize("module", [kptrace.model.ipvs, kptrace.parsers.detect, kptrace.parsers.ipvsadm,
                                    kptrace.parsers.ipvsadm.grammar, kptrace.parsers.ipset, kptrace.parsers.linereader])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_clean_input_does_not_import_pyparsing():
    """pyparsing reports bad lines; reading good ones must not pay for importing it (~0.2 s)."""
    import subprocess
    import sys

    code = ("import sys; from kptrace.parsers.ipvsadm import parse_ipvsadm; from kptrace.parsers.ipset import parse_ipset; "
            f"parse_ipvsadm(open({str(ROOT / 'fixtures/ipvs/node1.ipvsadm')!r}).read(), 'x'); "
            f"parse_ipvsadm(open({str(ROOT / 'fixtures/ipvs/node1.ipvsadm-save')!r}).read(), 'x'); "
            f"parse_ipset(open({str(ROOT / 'fixtures/ipvs/node1.ipset-list')!r}).read(), 'x'); "
            "print('pyparsing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "False"


def test_listing_and_save_of_one_node_agree():
    """The same node as ipvsadm -Ln and ipvsadm-save -n: the same services, schedulers and real servers
    (a saved rule cannot tell Local from Route: both are -g)."""
    for listing, saved in (("node1.ipvsadm", "node1.ipvsadm-save"), ("features.ipvsadm", "features.ipvsadm-save")):
        a = parse_ipvsadm((ROOT / "fixtures/ipvs" / listing).read_text(), listing)
        b = parse_ipvsadm((ROOT / "fixtures/ipvs" / saved).read_text(), saved)
        assert [vs.key for vs in a] == [vs.key for vs in b]
        for x, y in zip(a, b):
            assert (x.scheduler, x.flags, x.persistent, x.netmask, x.persistence_engine, x.one_packet) == \
                   (y.scheduler, y.flags, y.persistent, y.netmask, y.persistence_engine, y.one_packet)
            assert [(r.address, r.port, "Route" if r.forward == "Local" else r.forward, r.weight) for r in x.real_servers] == \
                   [(r.address, r.port, r.forward, r.weight) for r in y.real_servers]


def test_ipset_save_and_list_of_one_node_agree():
    for stem in ("node1", "features"):
        a = parse_ipset((ROOT / f"fixtures/ipvs/{stem}.ipset-save").read_text(), "s")
        b = parse_ipset((ROOT / f"fixtures/ipvs/{stem}.ipset-list").read_text(), "l")
        assert list(a.sets) == list(b.sets)
        for x, y in zip(a, b):
            assert (x.type, x.family, dict(x.options), x.members, dict(x.members_with_meta)) == \
                   (y.type, y.family, dict(y.options), y.members, dict(y.members_with_meta))


# ---------------------------------------------------------------- speed

def big_listing(services: int = 20_000, per_service: int = 5, save: bool = False) -> str:
    """A 10k-Service node in ipvs mode: ~20,000 virtual services (ClusterIP + NodePort) and ~100,000 real servers."""
    out = [] if save else ["IP Virtual Server version 1.2.1 (size=4096)\n", "Prot LocalAddress:Port Scheduler Flags\n",
                           "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"]
    for i in range(services):
        vip = f"10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256}" if i % 2 == 0 else f"192.168.0.2:{30000 + i // 2}"
        svc = f"{vip}:80" if i % 2 == 0 else vip
        out.append(f"-A -t {svc} -s rr\n" if save else f"TCP  {svc} rr\n")
        for j in range(per_service):
            # A NodePort service (odd i) has the endpoints of the cluster IP before it, as kube-proxy programs them.
            ep = f"10.{244 + j}.{(i // 2 // 256) % 256}.{i // 2 % 256}:8080"
            out.append(f"-a -t {svc} -r {ep} -m -w 1\n" if save else "  -> %-28s %-7s %-6d %-10u %-10u\n" % (ep, "Masq", 1, j % 3, j % 7))
    return "".join(out)


def big_ipset(members: int = 20_000) -> str:
    out = ["create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 4096 maxelem 65536 bucketsize 12 initval 0x3b6b47d4\n"]
    out.extend(f"add KUBE-CLUSTER-IP 10.{96 + i // 65536}.{(i // 256) % 256}.{i % 256},{'tcp' if i % 3 else 'udp'}:{80 + i % 50}\n"
               for i in range(members))
    return "".join(out)


def _best_of(fn, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def test_speed_of_a_big_listing(capsys):
    """The issue's target: a 100k-real-server listing in under 2 s. This machine is shared and noisy, so
    the test judges the time against what splitting the same text into tokens takes in the same run
    (the least any parser does): on a quiet machine that is ~0.1 s and the parse ~1 s."""
    listing, saved, sets = big_listing(), big_listing(save=True), big_ipset()
    split = _best_of(lambda: [line.split() for line in listing.split("\n")])
    t_list = _best_of(lambda: parse_ipvsadm(listing, "big"))
    t_save = _best_of(lambda: parse_ipvsadm(saved, "big"))
    t_set = _best_of(lambda: parse_ipset(sets, "big"))
    table = parse_ipvsadm(listing, "big")
    assert len(table) == 20_000 and sum(len(vs.real_servers) for vs in table) == 100_000
    with capsys.disabled():
        print(f"\n  ipvsadm -Ln, 20,000 services / 100,000 real servers ({listing.count(chr(10)):,} lines): {t_list:.2f} s"
              f" ({t_list / split:.1f} x splitting it into tokens, {split:.2f} s)"
              f"\n  ipvsadm-save -n, the same node: {t_save:.2f} s ({t_save / split:.1f} x)"
              f"\n  ipset save, 20,000 members: {t_set:.3f} s")
    assert t_list < 2.0 or t_list < 20 * split
    assert t_save < 2.0 or t_save < 20 * split
    assert t_set < 0.5 or t_set < 4 * split


@pytest.mark.parametrize("path", IPVS_FIXTURES + IPSET_FIXTURES, ids=lambda p: p.name)
def test_dump_option_recognises_ipvs_inputs(path):
    """--dump takes an ipvsadm listing, ipvsadm-save (whose "-A -t" once read as an iptables rule) or ipset
    output too: each is recognised and read as what it is, not parsed into a pile of iptables errors."""
    from kptrace.load import load_dumps

    dp = load_dumps([str(path)], lenient=True)
    if path in IPVS_FIXTURES:
        assert dp.ipvs is not None and dp.ipsets is None
    else:
        assert dp.ipsets is not None and dp.ipvs is None and len(dp.ipsets) > 0


def test_fixtures_are_what_their_generator_prints():
    """fixtures/ipvs/ is make_fixtures.py's output, unedited (its README says how each file was printed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "fixtures/ipvs/make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, text in module.files().items():
        assert (ROOT / "fixtures/ipvs" / name).read_text() == text, name


def test_the_pasted_forms_of_issue_12():
    """The four lines issue 12 found refused, each read now, and what is partial said (fixtures/pasted/ has more)."""
    header = ("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
              "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
    for first in ("[root@vm01 ~]# ipvsadm -L -n", "user@kmaster:~$ sudo ipvsadm -ln"):
        t = parse_ipvsadm(f"{first}\n{header}TCP  10.1.109.187:443 rr\n  -> 10.0.0.1:6443  Masq 1 0 0\n", "p.txt")
        assert [vs.endpoint for vs in t] == ["10.1.109.187:443"] and not t.truncated
        assert t.virtual("tcp", "10.1.109.187", 443).location.line == 5
    t = parse_ipvsadm(f"{header}TCP  10.1.109.187:443 rr\n  -> 10.0.0.1:6443  Masq 1 0 0\n...\n", "p.txt")
    assert t.truncated and t.notes == ("p.txt: the listing is elided at line 6: real servers of TCP 10.1.109.187:443 "
                                       "after line 5, and virtual services after it, may be missing",)
    t = parse_ipvsadm("TCP  10.1.109.187:443 rr\n", "p.txt")
    assert t.truncated and len(t) == 1 and "no header: read as `ipvsadm -Ln` output" in t.notes[0]
    # a line that is no paste's and no listing's is still an error, at its place
    with pytest.raises(ParseError) as caught:
        parse_ipvsadm(f"$ ipvsadm -Ln\n{header}Hello\n", "p.txt")
    assert caught.value.diagnostics[0].location == "p.txt:5:1"


def test_an_ipset_list_elided_among_its_members_is_partial_not_cut():
    text = ("$ ipset list KUBE-NODE-PORT-TCP\nName: KUBE-NODE-PORT-TCP\nType: bitmap:port\nRevision: 3\nHeader: range 0-65535\n"
            "Size in memory: 216\nReferences: 1\nNumber of entries: 3\nMembers:\n30080\n...\n31080\n")
    sets = parse_ipset(text, "p.txt")  # no "the listing was cut" error: the paste says it left members out
    s = sets["KUBE-NODE-PORT-TCP"]
    assert s.truncated and sorted(s.members) == ["30080", "31080"]
    assert "p.txt: the output is elided at line 11: members of set KUBE-NODE-PORT-TCP may be missing" in sets.notes
