"""`iptables -L` / `-S` listings: every form the real tool prints reads back as the rules iptables-save
writes for the same rules (fixtures/listings/, made in network namespaces by make_listings.py), the
traces agree, and what a listing cannot say is said (tests/cases/listings/).

Snapshots (tests/cases/listings/{ok,errors,realworld}/*.out) are refreshed with --update-snapshots.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import CASES, FIXTURES, ROOT

import kptrace.parsers.listing as iptables_list
from kptrace.errors import ParseError, format_diagnostic
from kptrace.load import load_dumps
from kptrace.model.addr import format_addr, parse_endpoint
from kptrace.model.dataplane import Dataplane
from kptrace.model.source import SourceText
from kptrace.parsers.detect import cannot_tell, detect_format, detect_variant
from kptrace.parsers.iptables_save import ParseResult, chain_from_lines, parse_all_rules, parse_iptables_save
from kptrace.parsers.listing import (
    EAGER_RULES,
    LISTING_FORMATS,
    ListingResult,
    listing_grammar,
    parse_iptables_list,
    save_string,
)
from kptrace.parsers.listing.fallback import pp_scan
from kptrace.parsers.listing.scan import scan_text
from kptrace.parsers.listing.structure import rule_fields
from kptrace.tracer.defaults import plan_packet, resolve_affinity, trace_packet
from kptrace.tracer.kubeproxy import add_standard_jumps
from kptrace.tracer.packet import Origin

LISTINGS = FIXTURES / "listings"
INPUTS = sorted(p.parent for p in LISTINGS.glob("*/save.rules"))
L_FILES = sorted(f for d in INPUTS for f in d.glob("*.L*.txt"))
S_FILES = sorted(f for d in INPUTS for f in d.glob("*.S*.txt"))
PASTED = sorted((LISTINGS / "pasted").glob("*.txt"))
REAL = sorted(FIXTURES.glob("realworld/*.iptables-list"))
ALL = L_FILES + S_FILES + PASTED + REAL
CASE_DIR = CASES / "listings"


def _read(path: Path, **kw) -> ListingResult:
    return parse_iptables_list(path.read_text(), str(path.relative_to(ROOT)), **kw)


def _save(directory: Path):
    path = directory / "save.rules"
    return parse_iptables_save(SourceText(str(path), path.read_text()), lenient=True).ruleset


def _form(path: Path) -> tuple[str, str]:
    table, form = path.name.split(".")[:2]
    return table, form


# ---------------------------------------------------------------- every form reads back as iptables-save

#: What each listing form cannot show, as (pattern, replacement) applied to iptables-save's line before
#: comparing: without -v there are no interface columns; -L never prints a hashlimit's name.
LOSSES = {
    "no -v": [(re.compile(r" (?:! )?-[io] \S+"), "")],
    "every -L": [(re.compile(r" --hashlimit-name \S+"), "")],
}


def _expected_text(save_text: str, form: str) -> str:
    losses = LOSSES["every -L"] + ([] if "v" in form.split("-")[1:] else LOSSES["no -v"])
    for rx, to in losses:
        save_text = rx.sub(to, save_text)
    return save_text


def _rounded(n: int) -> int:
    """A count as `iptables -L -v` prints it without -x (xtables_print_num), read back."""
    if n <= 99999:
        return n
    for scale in (10**3, 10**6, 10**9, 10**12):
        n = (n + 500) // 1000
        if n <= 9999 or scale == 10**12:
            return n * scale
    return n


@pytest.mark.parametrize("path", L_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_L_form_reads_back_as_the_dumps_rules(path):
    table, form = _form(path)
    save = _save(path.parent)
    got = _read(path)
    rs = got.ruleset
    assert not got.errors, [format_diagnostic(d) for d in got.errors]
    assert set(rs.tables) == {table}, rs.notes
    if rs.family != save.family:
        # ip6tables -L without -n prints "anywhere": with no address in the rules, nothing says IPv6
        assert any("nothing in the listing says whether iptables or ip6tables" in n for n in rs.notes)
        got = _read(path, family=save.family)
        rs = got.ruleset
    exact = "x" in form.split("-")
    for name, chain in save.tables[table].chains.items():
        listed = rs.chain(table, name)
        assert listed is not None, f"{name} missing"
        assert chain.policy == listed.policy, name
        want = [(r.line, r.text, r.counters) for r in chain.raw]
        have = [(r.line, r.text, r.counters) for r in listed.raw]
        assert len(want) == len(have), name
        for (_, w, wc), (line, h, hc) in zip(want, have):
            assert h == _expected_text(w, form), f"{path.name}:{line}"
            if "-v" in form:
                assert hc == (wc if exact else tuple(map(_rounded, wc))), f"{path.name}:{line}"
            else:
                assert hc is None
        if chain.builtin and listed.counters is not None:
            assert listed.counters == (chain.counters if exact else tuple(map(_rounded, chain.counters)))


@pytest.mark.parametrize("path", S_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_S_output_gives_the_same_rules(path):
    table, form = _form(path)
    save = _save(path.parent)
    got = _read(path)
    assert not got.diagnostics, [format_diagnostic(d) for d in got.diagnostics]
    rs = got.ruleset
    assert set(rs.tables) == {table}
    for name, chain in save.tables[table].chains.items():
        listed = rs.chain(table, name)
        assert [(r.text, r.counters if form == "S-v" else None) for r in chain.raw] == [(r.text, r.counters) for r in listed.raw]
        assert [(r.chain, r.base, r.matches, r.target) for r in chain.rules] == [(r.chain, r.base, r.matches, r.target) for r in listed.rules]
        if form == "S-v" and chain.builtin:
            assert listed.counters == chain.counters


@pytest.mark.parametrize("path", L_FILES + PASTED + REAL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_fast_path_and_the_general_path_agree(path):
    """The fast path (columns by str.split, texts read once per distinct text) and the general one (each
    column placed, each phrase mapped back to the line) write the same rule."""
    got = _read(path, lenient=True)
    listing = next(c for t in got.ruleset.tables.values() for c in t.chains.values()).loaded_lines()[0].listing
    for b in listing.blocks:
        if b.kind == "L":
            for i in b.rules:
                fast = listing.translate_mapped(i, want_map=False)
                general = listing.translate_mapped(i, want_map=True)
                assert fast[:2] == general[:2], f"{path.name}:{i + 1}"


def _rule_texts(paths):
    g = listing_grammar()
    for path in paths:
        got = _read(path, lenient=True)
        listing = next(c for t in got.ruleset.tables.values() for c in t.chains.values()).loaded_lines()[0].listing
        for b in listing.blocks:
            if b.kind != "L":
                continue
            for i in b.rules:
                found = rule_fields(listing.lines[i].rstrip(), b.layout)
                if found and found[1]:
                    cols, rest, _ = found
                    rest = rest[6:].lstrip() if rest.startswith("[goto]") else rest
                    yield f"{path.name}:{i + 1}", rest, g.targets.get(cols[b.layout.target])


def _summary(hits):
    return [(h.module.name, h.phrase.pattern, h.groups, h.start, h.end, h.negated, h.opens, h.target) for h in hits]


def test_the_regular_expressions_and_the_pyparsing_grammar_read_alike():
    """Both ways of reading the grammar data take every text of every fixture the same way (pyparsing
    ends a comment at its first " */"; the fast path also tries later ones, see the zoo)."""
    g = listing_grammar()
    compared = 0
    for where, text, target in _rule_texts(L_FILES + REAL):
        fast = scan_text(text, g, target)
        pp = pp_scan(text, g, target)
        if fast.fail is not None and '*/ ' in text:
            continue  # the zoo's comment with " */" in it
        assert fast.fail is None, where
        assert isinstance(pp, list), (where, pp)
        assert _summary(fast.hits) == _summary(pp), where
        compared += 1
    assert compared > 1000


#: phrases no fixture shows: this kernel has no udplite module; the zoo's gcinterval is the default,
#: which iptables does not print
UNSHOWN = {("udplite", p) for p in ("udplite", "spts:<!><port:lo>:<port:hi>", "spt:<!><port>", "dpts:<!><port:lo>:<port:hi>",
                                    "dpt:<!><port>")} | {("hashlimit", "htable-gcinterval <int>")}


def test_every_phrase_of_the_grammar_is_in_a_fixture():
    """grammars/iptables_list.toml is what iptables prints: each phrase in it was seen in the real
    tool's output (the zoo holds a rule for each)."""
    g = listing_grammar()
    seen = {(h.module.name, h.phrase.pattern) for _, text, target in _rule_texts(L_FILES + REAL)
            for h in scan_text(text, g, target).hits if h.phrase is not None}
    every = {(m.name, ph.pattern) for m in (*g.matches.values(), *g.targets.values())
             for ph in (*([m.head] if m.head else ()), *m.phrases)}
    assert every - seen == UNSHOWN


def test_a_comment_may_contain_its_own_end():
    rules = _read(LISTINGS / "zoo/nat.L-n.txt").ruleset.chain("nat", "ZN").rules
    assert rules[0].comment == 'a "quoted" */ comment'
    assert rules[0].text == '-A ZN -p tcp -m comment --comment "a \\"quoted\\" */ comment" -m tcp -j DNAT --to-destination 10.244.0.5:8000'


# ---------------------------------------------------------------- traces: a listing and a dump agree

SAMPLE_LISTINGS = {"yaobank.rules": "yaobank", "bootcamp.rules": "bootcamp", "yaobank-modern.rules": "yaobank-modern",
                   "yaobank-modern.rules6": "yaobank-modern6"}


def _listing_dataplane(paths: list[Path], node_ips) -> Dataplane:
    """What kptrace.load does with dumps, with listings (kptrace.load reads them once it dispatches on the format)."""
    rulesets = {}
    for path in paths:
        # An empty ip6tables table listed with names says nothing of IPv6 (see the notes): the
        # fixtures made with ip6tables are in folders whose name ends in 6.
        rs = _read(path, family=6 if path.parent.name.endswith("6") else None).ruleset
        if rs.family in rulesets:
            assert not set(rulesets[rs.family].tables) & set(rs.tables)
            rulesets[rs.family].tables.update(rs.tables)
            rulesets[rs.family].notes.extend(rs.notes)
        else:
            rulesets[rs.family] = rs
    for rs in rulesets.values():
        rs.notes.extend(add_standard_jumps(rs, chain_from_lines))
    return Dataplane(rulesets, tuple(node_ips))


def _packets(dump: Path, node_ips):
    """Every Service port of a dump (its KUBE-SERVICES and KUBE-NODEPORTS rules) from every origin."""
    text = dump.read_text()
    out = []
    for m in re.finditer(r"-A KUBE-SERVICES -d (\S+?)/(?:32|128) -p (tcp|udp|sctp) .*?--dport (\d+)", text):
        ip = m.group(1) if ":" not in m.group(1) else f"[{m.group(1)}]"
        for origin in Origin:
            out.append((f"{ip}:{m.group(3)}", m.group(2), origin))
    for m in re.finditer(r"-A KUBE-NODEPORTS -p (tcp|udp|sctp) .*?--dport (\d+)", text):
        for ip in node_ips:
            if (":" in ip) == (":" in m.group(0)) or ":" not in ip:
                out.append((f"{ip}:{m.group(2)}" if ":" not in ip else f"[{ip}]:{m.group(2)}", m.group(1), Origin.EXTERNAL))
    return out


def _outcomes(dp, dst, proto, origin, affinity=None):
    fam, addr, port = parse_endpoint(dst)
    plan = plan_packet(dp, format_addr(fam, addr), port, origin=origin, proto=proto)
    aff = resolve_affinity(dp, fam, affinity) if affinity else frozenset()
    trace = trace_packet(dp, plan, affinity=aff)
    return [(o.probability, o.verdict, o.dnat, o.snat, o.masquerade, o.mark, o.assumed,
             [(s.hook, s.table, s.chain, s.rule) for s in o.path]) for o in trace.outcomes]


FLOW_FILES = sorted((CASES / "flows").glob("samples-*.toml"))
TRACE_FORMS = ["L-n-v", "L-v", "L-n-v-x-line-numbers", "S", "S-v"]


@pytest.mark.parametrize("form", TRACE_FORMS)
@pytest.mark.parametrize("flows", FLOW_FILES, ids=lambda p: p.stem)
def test_a_listing_and_the_dump_trace_alike(flows, form):
    """The round-trip property: the same rules read as iptables-save and as a listing (every table, in
    one form) give the same traces: outcomes, exact probabilities, rewrites and rule paths."""
    data = tomllib.loads(flows.read_text())
    dumps = [ROOT / d for d in data["dump"]]
    node_ips = data.get("node_ips", [])
    saved = load_dumps([str(d) for d in dumps], node_ips=node_ips)
    paths = [f for d in dumps for f in sorted((LISTINGS / SAMPLE_LISTINGS[d.name]).glob(f"*.{form}.txt"))]
    listed = _listing_dataplane(paths, node_ips)
    packets = [(c["dst"], c.get("proto", "tcp"), Origin(c["from"]) if "from" in c else None, c.get("affinity")) for c in data["case"]]
    packets += [(dst, proto, origin, None) for d in dumps for dst, proto, origin in _packets(d, node_ips)]
    assert len(packets) > 10
    for dst, proto, origin, affinity in packets:
        assert _outcomes(listed, dst, proto, origin, affinity) == _outcomes(saved, dst, proto, origin, affinity), (dst, proto, origin)


@pytest.mark.parametrize("name", ["yaobank", "bootcamp", "yaobank-modern"])
def test_pasted_sessions_and_single_chains_trace_like_the_dump(name):
    """Two tables pasted with their prompts, or chains listed one by one with no table named: the same
    traces as the dump for every Service the pasted chains hold."""
    dump = FIXTURES / f"samples/{name}.rules"
    saved = load_dumps([str(dump)], node_ips=["10.0.0.99"])
    session = _listing_dataplane([LISTINGS / f"pasted/{name}.nat+filter.session.txt"], ["10.0.0.99"])
    for dst, proto, origin in _packets(dump, ["10.0.0.99"]):
        # the session lists nat and filter: the dump's mangle steps are not in it
        want = [(*o[:7], [step for step in o[7] if step[1] != "mangle"]) for o in _outcomes(saved, dst, proto, origin)]
        assert _outcomes(session, dst, proto, origin) == want, (dst, origin)
    # Chains listed one by one: a trace goes as far as they go, and then names the chain it needs.
    chains = _listing_dataplane([LISTINGS / f"pasted/{name}.nat-chains.L-n-v.txt"], ["10.0.0.99"])
    listed = chains.rulesets[4].tables["nat"].chains
    for dst, proto, _origin in _packets(dump, ["10.0.0.99"]):
        fam, addr, port = parse_endpoint(dst)
        trace = trace_packet(chains, plan_packet(chains, format_addr(fam, addr), port, origin=Origin.POD, proto=proto))
        whole = trace_packet(saved, plan_packet(saved, format_addr(fam, addr), port, origin=Origin.POD, proto=proto))
        for o in trace.outcomes:
            if o.verdict == "INCOMPLETE":
                needed = re.match(r"continues in nat/(\S+), which is not in this input", o.reason).group(1)
                assert needed not in listed and any(needed in (s.chain for s in w.path) for w in whole.outcomes)
            else:  # it got through the pasted chains: where it went is the dump's answer
                assert (o.probability, o.dnat) in {(w.probability, w.dnat) for w in whole.outcomes}


# ---------------------------------------------------------------- table-driven flows over real listings

LISTING_FLOWS = sorted((CASE_DIR / "flows").glob("*.toml"))


def _flow_cases():
    for f in LISTING_FLOWS:
        data = tomllib.loads(f.read_text())
        for case in data["case"]:
            yield pytest.param(f, data, case, id=f"{f.stem}::{case['name']}")


@pytest.mark.parametrize("path,data,case", list(_flow_cases()))
def test_listing_flow(path, data, case):
    dp = _listing_dataplane([ROOT / p for p in data["listing"]], data.get("node_ips", []))
    fam, addr, port = parse_endpoint(case["dst"])
    plan = plan_packet(dp, format_addr(fam, addr), port, src=case.get("src"),
                       origin=Origin(case["from"]) if "from" in case else None, proto=case.get("proto", "tcp"))
    trace = trace_packet(dp, plan)

    def explain() -> str:
        lines = [f"packet {trace.packet}"]
        for o in trace.outcomes:
            lines.append(f"  {float(o.probability):.6f} {o.verdict} dnat={o.dnat} masq={o.masquerade} {o.reason} assumed={list(o.assumptions)}")
            lines.extend(f"      {s.hook:<11} {s.table}/{s.chain} #{s.rule}: {s.text}  {s.source}:{s.line}" for s in o.path)
        return "\n".join(lines)

    got = [(o.dnat, o.verdict, o.masquerade, o.probability, o.reason) for o in trace.outcomes]
    assert len(got) == len(case["expect"]), explain()
    for exp in case["expect"]:
        match = [g for g in got if g[0] == exp.get("dnat") and g[1] == exp.get("verdict", "ACCEPT")]
        assert match, f"no outcome {exp}\n{explain()}"
        if "masq" in exp:
            assert match[0][2] == exp["masq"], explain()
        assert match[0][3] == Fraction(exp["probability"]), explain()
        if "reason" in exp:
            assert exp["reason"] in match[0][4], explain()
    if "assumed" in case:
        assert trace.assumed == case["assumed"], explain()
    for step in (s for o in trace.outcomes for s in o.path if not s.synthetic and s.rule):
        assert step.source.endswith(".iptables-list") or step.source.endswith(".txt")
        assert step.line > 0  # a rule keeps its line in the listing


# ---------------------------------------------------------------- what kptrace says: snapshots

def _render(result: ListingResult | None, error: ParseError | None) -> str:
    out = []
    if error is not None:
        out += ["--- ParseError (lenient=False)", error.render()]
        return "\n".join(out) + "\n"
    rs = result.ruleset
    out.append(f"--- IPv{rs.family}, forms: {', '.join(result.forms)}")
    out += ["--- notes"] + rs.notes
    out += ["--- diagnostics"] + [format_diagnostic(d) for d in result.diagnostics]
    out.append("--- rules, as iptables-save would write them")
    for t in rs.tables.values():
        out.append(f"*{t.name}")
        for c in t.chains.values():
            out.append(f":{c.name} {c.policy or '-'} [{c.counters[0]}:{c.counters[1]}]" if c.counters else f":{c.name} {c.policy or '-'}")
        for c in t.chains.values():
            for r in c.raw:
                out.append((f"[{r.counters[0]}:{r.counters[1]}] " if r.counters else "") + r.text + f"    # line {r.line}")
        out.append("COMMIT")
    return "\n".join(out) + "\n"


SNAPSHOT_CASES = sorted((CASE_DIR / "ok").glob("*.txt")) + sorted((CASE_DIR / "errors").glob("*.txt")) + REAL


def _snapshot_path(path: Path) -> Path:
    if path in REAL:
        return CASE_DIR / "realworld" / (path.stem + ".out")
    return path.with_suffix(".out")


@pytest.mark.parametrize("path", SNAPSHOT_CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_what_kptrace_says_about_a_listing(path, update_snapshots):
    source = str(path.relative_to(ROOT))
    got = _render(parse_iptables_list(path.read_text(), source, lenient=True), None)
    try:
        parse_iptables_list(path.read_text(), source)
    except ParseError as e:
        got += _render(None, e)
    assert "Traceback" not in got
    if path.parent.name == "ok" or path in REAL:
        assert "error:" not in got
    elif path.parent.name == "errors":
        assert "error:" in got or "warning:" in got
    snap = _snapshot_path(path)
    if update_snapshots or not snap.exists():
        if not update_snapshots:
            pytest.fail(f"no snapshot {snap.name}: run pytest --update-snapshots and review it")
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.write_text(got)
    assert got == snap.read_text()
    # The rules section is iptables-save input that reads back to the same rules.
    rules = got.split("--- rules, as iptables-save would write them\n", 1)[1].split("--- ParseError", 1)[0]
    again = parse_iptables_save(SourceText("again", re.sub(r"    # line \d+$", "", rules, flags=re.M)), lenient=True)
    mine = parse_iptables_list(path.read_text(), source, lenient=True).ruleset
    assert [r.text for r in again.ruleset.iter_rules()] == [r.text for r in mine.iter_rules()]


# ---------------------------------------------------------------- names, tables, lossy listings

def test_without_n_names_are_read_with_the_fixed_tables_and_the_rest_is_said():
    got = _read(CASE_DIR / "ok/names.txt", lenient=True)
    rules = {r.line: r for r in got.ruleset.iter_rules()}
    assert rules[5].base_option("-d").value == "224.0.0.0/4" and rules[5].base_option("-d").negated
    assert rules[6].base_option("-s").value == "k8s-cp/24"  # kept as written: nothing rests on it silently
    assert rules[8].match("tcp").get("--dport").value == "443"
    assert rules[9].match("multiport").get("--dports").value == "80,443,8000:8080"
    warned = {(d.line, d.message) for d in got.diagnostics}
    assert (6, "host name 'k8s-cp' cannot be turned into an address from the listing") in warned
    assert any(line == 11 and "'my-app'" in m for line, m in warned)
    assert any("names read with kptrace's fixed tables" in n and "https=443" in n for n in got.ruleset.notes)
    # The tracer cannot use the name: a decision resting on it is assumed, and says why.
    dp = _listing_dataplane([CASE_DIR / "ok/names.txt"], [])
    trace = trace_packet(dp, plan_packet(dp, "10.96.0.11", 8080, origin=Origin.NODE))
    assert trace.assumed


def test_a_lossy_listing_is_noticed():
    got = _read(FIXTURES / "realworld/017-kubeadm-flannel-nat-nonnumeric-lossy.iptables-list", lenient=True)
    lost = [d for d in got.diagnostics if "no port" in d.message]
    assert [d.line for d in lost] == [83, 84, 85, 86]
    unreachable = [d for d in got.diagnostics if "never reached" in d.message]
    assert {d.line for d in unreachable} == {20, 39}
    assert any("look incomplete" in n for n in got.ruleset.notes)
    # the same check keeps quiet on whole listings
    assert not [d for f in L_FILES if "-v" in f.name and "zoo" not in str(f) for d in _read(f).diagnostics]


@pytest.mark.parametrize("path,tables", [
    ("fixtures/realworld/005-kind-v1.23-traefik-chains.iptables-list",
     {"nat": ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-3CRYVFGPLWYNKULQ", "KUBE-SEP-242VRRB6CJESMF7F"],
      "filter": ["INPUT", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES", "KUBE-FIREWALL"]}),
    ("fixtures/realworld/017-kubeadm-flannel-nat-nonnumeric-lossy.iptables-list", {"nat": None}),
    ("fixtures/realworld/018-kubeadm-flannel-filter-nonnumeric.iptables-list", {"filter": None}),
    ("fixtures/listings/pasted/yaobank.nat+filter.L-n-v.txt", {"nat": None, "filter": None}),
    ("fixtures/listings/pasted/yaobank-modern6.nat-chains.S.txt", {"nat": None}),
    ("tests/cases/listings/ok/one-chain-no-table.txt", {"nat": ["KUBE-SVC-ERIFXISQEP7F7OF4"]}),
    ("tests/cases/listings/ok/prompts-and-commands.txt", {"nat": ["KUBE-SVC-OIQIZJVJK6E34BR4"], "filter": ["KUBE-FORWARD"]}),
])
def test_the_table_is_read_from_the_command_line_or_the_chains(path, tables):
    rs = _read(ROOT / path, lenient=True).ruleset
    assert sorted(rs.tables) == sorted(tables)
    for t, chains in tables.items():
        if chains is not None:
            assert list(rs.tables[t].chains) == chains


def test_a_listing_of_some_chains_says_which_chain_it_needs_next():
    dp = _listing_dataplane([FIXTURES / "realworld/005-kind-v1.23-traefik-chains.iptables-list"], [])
    trace = trace_packet(dp, plan_packet(dp, "10.96.237.231", 443, origin=Origin.POD))
    assert [(o.verdict, o.reason) for o in trace.outcomes] == [
        ("INCOMPLETE", "continues in nat/KUBE-SVC-QWNV66JT3UNCF3AW, which is not in this input")]
    problems = ParseResult(dp.rulesets[4], dp.rulesets[4].diagnostics, True)
    parse_all_rules(problems)  # what `kptrace parse` does: it also says so, at the listing's line and column
    (d,) = [d for d in problems.diagnostics if "KUBE-SVC-QWNV66JT3UNCF3AW" in d.message]
    assert "not in this input" in d.message
    assert d.line == 11 and d.text.startswith("    0     0 KUBE-SVC-QWNV66JT3UNCF3AW  tcp  --")
    assert (d.col, d.length) == (d.text.index("KUBE-SVC-QWNV66JT3UNCF3AW") + 1, len("KUBE-SVC-QWNV66JT3UNCF3AW"))


def test_counters_and_policies():
    rs = _read(FIXTURES / "realworld/005-kind-v1.23-traefik-chains.iptables-list").ruleset
    assert rs.chain("filter", "INPUT").counters == (166_000, 27_000_000)
    assert rs.chain("filter", "INPUT").policy == "ACCEPT"
    assert rs.chain("filter", "INPUT").rules[0].counters == (1_954_000, 383_000_000)
    assert any("counters are rounded" in n for n in rs.notes)
    exact = _read(LISTINGS / "yaobank-modern/filter.L-n-v-x-line-numbers.txt").ruleset
    assert exact.chain("filter", "INPUT").counters == _save(LISTINGS / "yaobank-modern").chain("filter", "INPUT").counters
    assert not any("rounded" in n for n in exact.notes)


# ---------------------------------------------------------------- the API, detection, errors

def test_the_public_api():
    assert iptables_list.__all__ == sorted(iptables_list.__all__)
    for name in iptables_list.__all__:
        assert getattr(iptables_list, name).__doc__ or name.isupper()
    modules = [iptables_list] + [importlib.import_module(f"{iptables_list.__name__}.{m.name}")
                                 for m in pkgutil.iter_modules(iptables_list.__path__)]
    results = [doctest.testmod(m) for m in modules]
    assert sum(r.failed for r in results) == 0 and sum(r.attempted for r in results) > 0
    got = _read(LISTINGS / "bootcamp/nat.L-n.txt")
    assert isinstance(got, ParseResult) and isinstance(got, ListingResult)
    assert got.forms == ("-L -n",)
    assert save_string("") == '""' and save_string("it's") == '"it\\\'s"'
    assert "iptables-list" in LISTING_FORMATS and EAGER_RULES > 1000


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_listing_is_detected(path):
    variant = detect_variant(path.read_text())
    assert variant == ("iptables-rules" if ".S" in path.name else "iptables-list")
    assert detect_format(path.read_text()) in LISTING_FORMATS


def test_an_input_nobody_reads_gets_a_clear_message():
    d = cannot_tell("# a note\nhello, this is a shell transcript\n$ kubectl get svc\n", "notes.txt")
    assert detect_format("hello, this is a shell transcript\n") is None
    assert format_diagnostic(d).splitlines()[:3] == [
        "notes.txt:2:1: error: cannot tell what this input is: it is none of the formats kptrace reads",
        "    hello, this is a shell transcript",
        "    ^^^^^^"]


def test_errors_raise_unless_lenient():
    text = (CASE_DIR / "errors/wrapped-line.txt").read_text()
    with pytest.raises(ParseError) as e:
        parse_iptables_list(text, "wrapped.txt")
    assert "wrapped.txt:" in e.value.render()
    assert parse_iptables_list(text, "wrapped.txt", lenient=True).errors


def test_a_big_listing_is_read_lazily():
    """Past EAGER_RULES rules, a rule is turned into iptables-save form when first used."""
    got = _read(LISTINGS / "yaobank-modern/nat.L-n-v.txt")
    assert sum(len(c) for t in got.ruleset.tables.values() for c in t.chains.values()) <= EAGER_RULES
    # -L -n: no counters (a rule with counters makes Chain.rule_at read its whole chain)
    chain = "Chain BIG (0 references)\ntarget     prot opt source               destination\n" + "\n".join(
        f"ACCEPT     6    --  0.0.0.0/0            10.{i // 65536}.{i // 256 % 256}.{i % 256}          tcp dpt:{i % 65535 + 1}"
        for i in range(EAGER_RULES + 1)) + "\n"
    big = parse_iptables_list(chain, "big.txt")
    c = big.ruleset.chain("filter", "BIG")
    lines = c.loaded_lines()[0]
    assert lines.translated == 0  # nothing read yet
    n = EAGER_RULES
    assert c.rule_at(n).text == f"-A BIG -d 10.{n // 65536}.{n // 256 % 256}.{n % 256}/32 -p tcp -m tcp --dport {n % 65535 + 1} -j ACCEPT"
    assert lines.translated == 1
