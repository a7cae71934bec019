"""Property-based tests (hypothesis) for every reader: what people paste never gets a traceback, never
hangs, and well-formed input round-trips.

Each reader is one row of ``READERS``: how to call it, which fixtures are its own (by
:func:`~kptrace.parsers.detect.detect_format`), and what the commands do next with what it returns
(traces, Service views, the drift check). Every row gets every property:

1. every fixture, and mutations of it (lines deleted, doubled, swapped, cut; bytes flipped; non-ASCII,
   NBSP, ANSI colours, CRLF, tabs, ``...`` lines, shell prompts, markdown fences, lines of other
   formats spliced in), and arbitrary text: the reader, then tracing and computing Services, raise
   nothing but :class:`~kptrace.errors.KptraceError`; a result with diagnostics is fine;
2. no input takes longer than ``HARD_LIMIT`` seconds (hypothesis' ``deadline`` plus a SIGALRM guard
   that stops a loop which would never end);
3. well-formed input round-trips: read -> ``iptables-save`` -> read gives the same chains, the same
   parsed rules and the same traces (fixtures of iptables-save and of listings, and generated
   kube-proxy rule sets).

A new reader is one more row. The examples are fixed (``derandomize``) and bounded (``max_examples``):
the file runs in about a minute on two cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("hypothesis", reason="the property tests need hypothesis (pip install hypothesis)")
from conftest import FIXTURES, ROOT  # noqa: E402
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context  # noqa: E402

from kptrace.errors import KptraceError, ParseError, format_diagnostic  # noqa: E402
from kptrace.model.addr import format_addr, parse_addr  # noqa: E402
from kptrace.model.dataplane import Dataplane  # noqa: E402
from kptrace.model.rules import Ruleset  # noqa: E402
from kptrace.model.source import SourceText  # noqa: E402
from kptrace.parsers.detect import detect_format  # noqa: E402
from kptrace.tracer.packet import Origin  # noqa: E402

#: Seconds one example may take, reader and traces together; far above what any takes (a few ms).
HARD_LIMIT = 20
#: A longer search: KPTRACE_PROPERTY_SCALE=20 runs 20 times the examples; KPTRACE_PROPERTY_RANDOM=1 draws
#: new ones on every run (with pytest --hypothesis-seed=N to replay one), as a nightly job may.
SCALE = float(os.environ.get("KPTRACE_PROPERTY_SCALE", "1"))
RANDOM = os.environ.get("KPTRACE_PROPERTY_RANDOM") == "1"


# ---------------------------------------------------------------- never hang: a hard wall-clock guard

class Hang(Exception):
    """An example ran past HARD_LIMIT: taken for a loop that never ends."""


@contextlib.contextmanager
def time_limit(seconds: float = HARD_LIMIT):
    def on_alarm(signum, frame):
        raise Hang(f"no answer after {seconds} s: a loop that never ends?")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def only_kptrace_errors(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a KptraceError is an answer (returns None), anything else fails the test."""
    try:
        return fn()
    except ParseError as e:
        assert e.diagnostics, "a ParseError without diagnostics"
        e.render()
    except KptraceError as e:
        e.render()
    return None


def _settings(n: int, **kw) -> settings:
    return settings(max_examples=max(1, int(n * SCALE)), derandomize=not RANDOM, database=None,
                    deadline=timedelta(seconds=HARD_LIMIT / 2), print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
                    **kw)


# ---------------------------------------------------------------- fixtures, by format

@cache
def _fixture_texts() -> dict[str, str]:
    """Every fixture that is text, by path relative to the checkout."""
    out = {}
    for p in sorted(FIXTURES.rglob("*")):
        if not p.is_file() or p.suffix in (".py", ".md"):
            continue
        try:
            out[str(p.relative_to(ROOT))] = p.read_text()
        except UnicodeDecodeError:
            continue
    return out


def _is_cluster_state(path: str, text: str) -> bool:
    # detect_format does not name cluster state (it is not a node dump): the fixtures are kubectl's JSON.
    return path.endswith("cluster.json")


def _of_format(*formats: str) -> Callable[[str, str], bool]:
    return lambda path, text: detect_format(text) in formats


def _of_variant(*variants: str) -> Callable[[str, str], bool]:
    from kptrace.parsers.detect import detect_variant

    return lambda path, text: detect_variant(text) in variants


@cache
def _vocabulary() -> tuple[str, ...]:
    """Words of every fixture: arbitrary text made of them reaches deep into the readers."""
    words = set()
    for text in _fixture_texts().values():
        words.update(text.split()[:400])
    return tuple(sorted(words))


# ---------------------------------------------------------------- what the commands do with a result

NODE_IP = "10.240.0.11"
DEFAULT_DST = {4: "10.96.0.1", 6: "fd00:10:96::1"}
_SERVICE_RULE = re.compile(r"-d (\S+?)(?:/\d+)? .*?-p (tcp|udp|sctp)\b.*?--dport (\d+)")
_COMMENT_SPN = re.compile(r'--comment "?([a-z0-9][\w.-]*/[\w.-]+)')


def _packets(dp: Dataplane, limit: int = 3) -> list[tuple[str, int, str]]:
    """A few packets to the Services the input shows (ClusterIPs, virtual services), and a default one."""
    found = []
    for rs in dp.rulesets.values():
        chain = rs.chain("nat", "KUBE-SERVICES")
        for _, text in chain.texts()[:60] if chain is not None else ():
            m = _SERVICE_RULE.search(text)
            if m:
                found.append((m.group(1), int(m.group(3)), m.group(2)))
    for vs in list(dp.ipvs or ())[:20]:
        if vs.address and vs.port:
            found.append((vs.address, vs.port, vs.protocol.lower()))
    found += [(DEFAULT_DST[fam], 443, "tcp") for fam in sorted(dp.rulesets) or [4]]
    out = []
    for ip, port, proto in found:
        try:
            fam, addr = parse_addr(ip)
        except ValueError:
            continue
        if 1 <= port <= 65535 and proto in ("tcp", "udp", "sctp") and (format_addr(fam, addr), port, proto) not in out:
            out.append((format_addr(fam, addr), port, proto))
    return out[:limit] + out[-1:] if len(out) > limit else out


def _trace(dp: Dataplane, dst: str, port: int, proto: str, origin: Origin):
    from kptrace.tracer.defaults import plan_packet, trace_packet

    trace = trace_packet(dp, plan_packet(dp, dst, port, origin=origin, proto=proto))
    total = sum((o.probability for o in trace.outcomes), Fraction(0))
    assert total == 1, f"the outcomes of {trace.packet} add up to {total}, not 1"
    return trace


def use_dataplane(dp: Dataplane) -> None:
    """What `parse`, `packet` and `svc` do with a data plane: inventory, diagnostics, traces, Service views."""
    from kptrace.render.json_out import service_json, trace_json
    from kptrace.tracer.inventory import inventory

    only_kptrace_errors(lambda: inventory(dp))
    for d in dp.diagnostics:
        assert d.line >= 0 and d.col >= 0, d
        format_diagnostic(d)
    packets = _packets(dp)
    origins = list(Origin)
    for i, (dst, port, proto) in enumerate(packets):
        origin = origins[i % len(origins)]
        trace = only_kptrace_errors(lambda: _trace(dp, dst, port, proto, origin))
        if trace is not None:
            trace_json(trace)
    queries = [f"[{dst}]:{port}" if ":" in dst else f"{dst}:{port}" for dst, port, _ in packets[:2]]
    for rs in dp.rulesets.values():
        chain = rs.chain("nat", "KUBE-SERVICES")
        for _, text in chain.texts()[:30] if chain is not None else ():
            m = _COMMENT_SPN.search(text)
            if m:
                queries.append(m.group(1))
                break
        nat = rs.tables.get("nat")
        queries += [n for n in (nat.chains if nat else ()) if n.startswith("KUBE-SVC-")][:1]
    for q in queries:
        views = only_kptrace_errors(lambda: _views(dp, q))
        if views:
            service_json(views, dp.notes)


def _views(dp: Dataplane, query: str, state=None, node: str | None = None):
    if dp.ipvs is not None:
        from kptrace.checks.expected import expected_ports
        from kptrace.tracer.services_ipvs import ipvs_service_views

        return ipvs_service_views(dp, query, state, node, expected_ports=expected_ports)
    from kptrace.tracer.services import service_views

    return service_views(dp, query)


def _ruleset_dataplane(rs: Ruleset, node_ips: tuple[str, ...] = ()) -> Dataplane:
    """What kptrace.load makes of one iptables ruleset."""
    from kptrace.parsers.iptables_save import chain_from_lines
    from kptrace.tracer.kubeproxy import add_standard_jumps

    rs.notes.extend(add_standard_jumps(rs, chain_from_lines))
    return Dataplane({rs.family: rs}, node_ips)


def use_rules(result) -> None:
    from kptrace.parsers.iptables_save import parse_all_rules

    only_kptrace_errors(lambda: parse_all_rules(result))  # what `kptrace parse` does
    use_dataplane(_ruleset_dataplane(result.ruleset))


def _ipvs_node(*, ipvs=None, ipsets=None) -> Dataplane:
    """fixtures/ipvs's node1 (iptables rules of IPVS mode, virtual services, sets), with one part replaced."""
    from kptrace.load import load_texts
    from kptrace.parsers.ipset import parse_ipset
    from kptrace.parsers.ipvsadm import parse_ipvsadm

    texts = _fixture_texts()
    dp = load_texts([SourceText(p, texts[p]) for p in ("fixtures/ipvs/node1.rules", "fixtures/ipvs/node1.rules6")])
    dp.ipvs = ipvs if ipvs is not None else parse_ipvsadm(texts["fixtures/ipvs/node1.ipvsadm"], "node1.ipvsadm")
    dp.ipsets = ipsets if ipsets is not None else parse_ipset(texts["fixtures/ipvs/node1.ipset-save"], "node1.ipset-save")
    return dp


def use_ipvs(table) -> None:
    for d in table.diagnostics:
        format_diagnostic(d)
    use_dataplane(_ipvs_node(ipvs=table))


def use_ipsets(sets) -> None:
    for d in sets.diagnostics:
        format_diagnostic(d)
    use_dataplane(_ipvs_node(ipsets=sets))


def use_cluster_state(state) -> None:
    """`svc --node-name --cluster-state` and `drift`: expected endpoints against an iptables and an IPVS node."""
    from kptrace.checks.drift import check_node
    from kptrace.load import load_texts

    texts = _fixture_texts()
    node = state.nodes[0].name if state.nodes else "node1"
    iptables = load_texts([SourceText("yaobank.rules", texts["fixtures/samples/yaobank.rules"])], node_ips=(NODE_IP,))
    for dp in (iptables, _ipvs_node()):
        only_kptrace_errors(lambda: check_node(dp, state, node))
    for svc in state.services[:2]:
        only_kptrace_errors(lambda: _views(_ipvs_node(), f"{svc.namespace}/{svc.name}", state, node))


# ---------------------------------------------------------------- the readers

def _read_save(text: str, source: str, lenient: bool):
    from kptrace.parsers.iptables_save import parse_iptables_save

    return parse_iptables_save(SourceText(source, text), lenient=lenient)


def _read_listing(text: str, source: str, lenient: bool):
    from kptrace.parsers.listing import parse_iptables_list

    return parse_iptables_list(text, source, lenient=lenient)


def _read_ipvsadm(text: str, source: str, lenient: bool):
    from kptrace.parsers.ipvsadm import parse_ipvsadm

    return parse_ipvsadm(text, source, lenient=lenient)


def _read_ipset(text: str, source: str, lenient: bool):
    from kptrace.parsers.ipset import parse_ipset

    return parse_ipset(text, source, lenient=lenient)


def _read_cluster_state(text: str, source: str, lenient: bool):
    from kptrace.parsers.cluster_state import parse_cluster_state

    return parse_cluster_state(text, source)


def _read_load(text: str, source: str, lenient: bool):
    """The CLI's loading (format detection, then the reader): strict as `packet`/`svc`, lenient and
    complete as `parse`."""
    from kptrace.load import load_texts

    return load_texts([SourceText(source, text)], lenient=lenient, full=lenient)


@dataclass(frozen=True)
class Reader:
    name: str
    read: Callable[[str, str, bool], Any]  # (text, source, lenient) -> result; errors are KptraceError
    takes: Callable[[str, str], bool]  # (fixture path, text) -> is it this reader's format
    use: Callable[[Any], None]  # what the commands do next with the result
    round_trip: bool = False  # the result's .ruleset -> iptables-save -> the same model and traces
    structured: bool = False  # JSON/YAML: mutate the objects too, not only the lines


def _nft_readers() -> list[Reader]:
    """The nftables readers (kptrace/parsers/nft/: text.py, json_doc.py)."""
    import importlib

    rows = []
    for name, module, fn, takes, structured in (
        ("nft-text", "text", "parse_nft_text", _of_variant("nft"), False),
        ("nft-json", "json_doc", "parse_nft_json", _of_variant("nft-json"), True),
    ):
        mod = importlib.import_module(f"kptrace.parsers.nft.{module}")
        parse = getattr(mod, fn)
        rows.append(Reader(name, lambda text, source, lenient, parse=parse: parse(text, source, lenient=lenient),
                           takes, _use_nft(mod), structured=structured))
    return rows


def _use_nft(module) -> Callable[[Any], None]:
    """What `kptrace parse` does with an nftables ruleset (tracing it joins here once load.py reads nft)."""
    def use(ruleset) -> None:
        check = getattr(module, "parse_all_rules", None)
        if check is not None:
            only_kptrace_errors(lambda: check(ruleset))
        for d in ruleset.diagnostics:
            format_diagnostic(d)
    return use


READERS: list[Reader] = [
    Reader("iptables-save", _read_save, _of_format("iptables-save"), use_rules, round_trip=True),
    Reader("iptables-list", _read_listing, _of_format("iptables-list"), use_rules, round_trip=True),
    Reader("ipvsadm", _read_ipvsadm, _of_format("ipvsadm"), use_ipvs),
    Reader("ipset", _read_ipset, _of_format("ipset"), use_ipsets),
    Reader("cluster-state", _read_cluster_state, _is_cluster_state, use_cluster_state, structured=True),
    Reader("load", _read_load, lambda path, text: detect_format(text) is not None, use_dataplane),
    *_nft_readers(),
]


@cache
def fixtures_of(reader: Reader) -> tuple[str, ...]:
    paths = tuple(p for p, t in _fixture_texts().items() if reader.takes(p, t))
    assert paths, f"no fixture of {reader.name}"
    return paths


def read_and_use(reader: Reader, text: str, lenient: bool, source: str = "mutated") -> None:
    """Property 1 and 2 for one input: the reader, then what the commands do with its result."""
    with time_limit():
        result = only_kptrace_errors(lambda: reader.read(text, source, lenient))
        if currently_in_test_context():
            event("read" if result is not None else "refused")  # --hypothesis-show-statistics
        if result is not None:
            reader.use(result)


# ---------------------------------------------------------------- mutations

JUNK = ["\u00a0", "é", "\u200b", "\ufeff", "\x1b[01;31m", "\x1b[0m", "\x1b[K", "\t", "\r", "\x00", "—", "“", "”", "😀",
        "\u202e", "\x7f", "\\", '"', "'", "#", "!", "[", "]", "{", "}", ":", "/", "-", "--", " ", "...", ",", "\n", "\n\n",
        "0x", "::", "*/", "/*"]
PROMPTS = ["$ ", "# ", "[root@vm01 ~]# ", "user@kmaster:~$ sudo ", "root@node1:/# ", "> ", "PS C:\\> ", "bash-5.1$ "]
COMMANDS = ["iptables-save", "ip6tables-save -c", "iptables -t nat -L -n -v", "iptables -S", "ipvsadm -Ln", "ipvsadm-save -n",
            "ipset save", "ipset list", "kubectl exec -n kube-system kube-proxy-abcde -- iptables-save", "nft list ruleset",
            "kubectl get svc,endpointslices,nodes -A -o json"]
ELISIONS = ["...", "[...]", "…", "<snip>", "# ... 300 more lines ...", "  ..."]
#: Characters str.isdigit() accepts: superscripts and circled digits (int() refuses them), and the
#: decimal digits of other scripts (int() reads them).
DIGITS = ["³", "²", "¹", "①", "٣", "１", "߂"]
WORDS = ["0", "-1", "65535", "65536", "4294967296", "0x4000/0x4000", "0xffffffff", "10.0.0.1", "10.0.0.0/8", "::1", "fe80::1%eth0",
         "-", "!", "ACCEPT", "DROP", "RETURN", "KUBE-SERVICES", "KUBE-SVC-XXXXXXXXXXXXXXXX", "--", "-j", "-m", "-A", "rr", "Masq",
         "TCP", "hash:ip,port", "null", "[]", "{}", '""', "1e999", "0.5", "1/3", "a" * 300, *DIGITS]

_pos = st.integers(0, 1 << 20)
LINE_OPS = st.one_of(
    st.tuples(st.just("delete"), _pos),
    st.tuples(st.just("duplicate"), _pos),
    st.tuples(st.just("swap"), _pos, _pos),
    st.tuples(st.just("keep-lines"), _pos),
    st.tuples(st.just("cut"), _pos),
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("insert"), _pos, st.sampled_from(JUNK) | st.text(min_size=1, max_size=4)),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("tabs"), _pos),
    st.tuples(st.just("elide"), _pos, st.sampled_from(ELISIONS)),
    st.tuples(st.just("prompt"), _pos, st.sampled_from(PROMPTS), st.sampled_from(COMMANDS)),
    st.tuples(st.just("prefix"), _pos, st.sampled_from(PROMPTS)),
    st.tuples(st.just("fence")),
    st.tuples(st.just("word"), _pos, _pos, st.sampled_from(WORDS)),
    st.tuples(st.just("splice"), _pos, _pos),
    st.tuples(st.just("repeat"), _pos, st.integers(2, 200)),
    st.tuples(st.just("digit"), _pos, st.sampled_from(DIGITS)),
)


def _at(seq, i: int) -> int:
    return i % len(seq) if seq else 0


def mutate(text: str, ops) -> str:
    """Apply line and character edits; positions wrap around, so any drawn position is valid."""
    for op in ops:
        kind = op[0]
        lines = text.split("\n")
        if kind == "delete" and lines:
            del lines[_at(lines, op[1])]
        elif kind == "duplicate" and lines:
            i = _at(lines, op[1])
            lines.insert(i, lines[i])
        elif kind == "swap" and lines:
            i, j = _at(lines, op[1]), _at(lines, op[2])
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "keep-lines":
            lines = lines[: op[1] % (len(lines) + 1)]
        elif kind == "cut":
            text = text[: op[1] % (len(text) + 1)]
            continue
        elif kind == "flip" and text:
            i = _at(text, op[1])
            c = chr(ord(text[i]) ^ (1 << op[2]))
            text = text[:i] + ("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c) + text[i + 1:]
            continue
        elif kind == "insert":
            i = op[1] % (len(text) + 1)
            text = text[:i] + op[2] + text[i:]
            continue
        elif kind == "crlf":
            text = text.replace("\n", "\r\n")
            continue
        elif kind == "tabs" and lines:
            i = _at(lines, op[1])
            lines[i] = re.sub(r" +", "\t", lines[i])
        elif kind == "elide":
            lines.insert(op[1] % (len(lines) + 1), op[2])
        elif kind == "prompt":
            lines.insert(op[1] % 2 * len(lines), op[2] + op[3])  # before the output, or a trailing prompt after it
        elif kind == "prefix" and lines:
            i = _at(lines, op[1])
            lines[i] = op[2] + lines[i]
        elif kind == "fence":
            lines = ["```console", *lines, "```"]
        elif kind == "word" and lines:
            i = _at(lines, op[1])
            words = lines[i].split(" ")
            words[_at(words, op[2])] = op[3]
            lines[i] = " ".join(words)
        elif kind == "splice":
            texts = _fixture_texts()
            other = texts[sorted(texts)[_at(texts, op[1])]].split("\n")
            lines.insert(op[2] % (len(lines) + 1), other[_at(other, op[2])])
        elif kind == "digit":
            at = [m.start() for m in re.finditer(r"[0-9]", text)]
            if at:
                i = at[op[1] % len(at)]
                text = text[:i] + op[2] + text[i + 1:]
            continue
        elif kind == "repeat" and lines:
            i = _at(lines, op[1])
            lines[i:i + 1] = [lines[i]] * op[2]
        text = "\n".join(lines)
    return text


# Cluster state: edits to the decoded objects reach the object readers, which line edits (mostly broken
# JSON) do not.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70000) | st.floats(allow_nan=True) | st.text(max_size=6)
    | st.sampled_from(["10.0.0.1", "::1", "10.0.0.0/33", "TCP", "SCTP", "Local", "Cluster", "IPv4", "IPv6", "FQDN",
                       "ClientIP", "None", "LoadBalancer", "NodePort", ""]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
OBJECT_OPS = st.lists(st.tuples(st.sampled_from(["delete", "replace", "duplicate"]), _pos, JSON_VALUES), min_size=1, max_size=4)


def _paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*path, i))


def mutate_objects(text: str, ops, as_yaml: bool) -> str:
    obj = json.loads(text)
    for kind, pos, value in ops:
        paths = list(_paths(obj))[1:]
        if not paths:
            break
        *parent_path, key = paths[pos % len(paths)]
        parent = obj
        for k in parent_path:
            parent = parent[k]
        if kind == "delete":
            del parent[key]
        elif kind == "replace":
            parent[key] = value
        elif isinstance(parent, list):
            parent.insert(key, parent[key])
    if as_yaml:
        import yaml

        return yaml.safe_dump(obj)
    return json.dumps(obj, indent=2)


# ---------------------------------------------------------------- property 1 and 2: never a traceback, never a hang

def _reader_ids(r: Reader) -> str:
    return r.name


@pytest.mark.parametrize("reader", READERS, ids=_reader_ids)
def test_every_fixture_reads_and_traces(reader):
    """Every fixture of the reader's format, as it is: strict and lenient."""
    texts = _fixture_texts()
    for path in fixtures_of(reader):
        for lenient in (False, True):
            read_and_use(reader, texts[path], lenient, source=path)


@pytest.mark.parametrize("reader", READERS, ids=_reader_ids)
@_settings(250)
@given(data=st.data(), ops=st.lists(LINE_OPS, min_size=1, max_size=5), lenient=st.booleans())
def test_mutated_fixtures_give_an_answer_or_a_kptrace_error(reader, data, ops, lenient):
    path = data.draw(st.sampled_from(fixtures_of(reader)), label="fixture")
    text = mutate(_fixture_texts()[path], ops)
    read_and_use(reader, text, lenient)


def _arbitrary_text(reader: Reader):
    vocab = _vocabulary()
    word = st.sampled_from(vocab) | st.sampled_from(WORDS) | st.sampled_from(JUNK) | st.text(max_size=4)
    line = st.lists(word, max_size=10).map(" ".join)
    # The first lines of one of the reader's fixtures make the text read as that format.
    head = st.sampled_from(fixtures_of(reader)).flatmap(
        lambda p: st.integers(0, 4).map(lambda n: "\n".join(_fixture_texts()[p].split("\n")[:n])))
    soup = st.tuples(head, st.lists(line, max_size=12)).map(lambda t: "\n".join([t[0], *t[1]]))
    return st.text(max_size=300) | soup


@pytest.mark.parametrize("reader", READERS, ids=_reader_ids)
@_settings(150)
@given(data=st.data(), lenient=st.booleans())
def test_arbitrary_text_gives_an_answer_or_a_kptrace_error(reader, data, lenient):
    text = data.draw(_arbitrary_text(reader), label="text")
    read_and_use(reader, text, lenient)


def _reader(name: str) -> Reader:
    return next(r for r in READERS if r.name == name)


# Inputs that failed, kept as regression examples (each names the reader it failed in). Those marked
# "fixed" marks defects this suite found, kept as regression examples.
_IPVS_MIXED = "TCP  10.0.0.50:80 rr\n  -> [fd00::1:2]:8080             Masq    1      0          0\n"
_SAVE_BAD_CLUSTER_IP = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]
:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]
-A KUBE-SERVICES -d 172.30/32 -p tcp -m comment --comment "ns/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-AAAAAAAAAAAAAAAA
-A KUBE-SVC-AAAAAAAAAAAAAAAA -m comment --comment "ns/web:http" -j KUBE-SEP-BBBBBBBBBBBBBBBB
-A KUBE-SEP-BBBBBBBBBBBBBBBB -p tcp -m comment --comment "ns/web:http" -m tcp -j DNAT --to-destination 10.244.1.3:8080
COMMIT
"""
_SLICE_LIST_LABEL = ('{"kind": "EndpointSlice", "addressType": "IPv4", "endpoints": [], "metadata": {"name": "s", '
                     '"namespace": "n", "labels": {"kubernetes.io/service-name": ["x"]}}}')


@_settings(60)
@example(reader=_reader("iptables-list"), lenient=False,  # fixed: IndexError in the listing reader's _address_option
         text="Chain X (1 references)\ntarget     prot opt source               destination\nACCEPT     0 !  --  0.0.0.0/0            0.0.0.0/0\n")
@example(reader=_reader("cluster-state"), text="[" * 1000, lenient=False)  # fixed: RecursionError in json
@example(reader=_reader("cluster-state"), text="- " * 1000 + "x", lenient=False)  # fixed: RecursionError in walk
@example(reader=_reader("cluster-state"), text="&a [*a]", lenient=False)  # fixed: a list containing itself
@example(reader=_reader("cluster-state"), text='{"kind": true, "items": []}', lenient=False)  # fixed: AttributeError
@example(reader=_reader("cluster-state"), text='[{"kind": 1}, {"kind": "X"}]', lenient=False)  # fixed: TypeError
@example(reader=_reader("cluster-state"), text='{"kind": "Service", "metadata": true}', lenient=False)  # fixed: AttributeError
@example(reader=_reader("cluster-state"), text=_SLICE_LIST_LABEL, lenient=False)  # fixed: TypeError in expected_ports
@example(reader=_reader("ipvsadm"), text=_IPVS_MIXED, lenient=False)  # fixed: AddressValueError in the tracer
@example(reader=_reader("load"), text=_IPVS_MIXED, lenient=False)
@example(reader=_reader("iptables-save"), text=_SAVE_BAD_CLUSTER_IP, lenient=True)  # fixed: ValueError in service_views
@example(reader=_reader("load"), text=_SAVE_BAD_CLUSTER_IP, lenient=False)
@example(reader=_reader("load"), lenient=True,  # fixed: --lenient traces a mark parse refuses: ValueError in the tracer
         text="*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j CONNMARK --set-xmark ³xff/0xffffffff\nCOMMIT\n")
# fixed: str.isdigit() takes "³", int() refuses it (ValueError): values.py _port, ipvsadm.py and ipset.py readers
@example(reader=_reader("iptables-save"), lenient=True,
         text="*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport ³0 -j ACCEPT\nCOMMIT\n")
@example(reader=_reader("ipvsadm"), text="-A -t 10.0.0.50:80 -s rr\n-a -t 10.0.0.50:80 -r 10.1.0.1:³0 -m -w 1\n", lenient=True)
@example(reader=_reader("ipvsadm"), text="-A -t 10.0.0.50:80 -s rr\n-a -t 10.0.0.50:80 -r 10.1.0.1:80 -m -w ³\n", lenient=True)
@example(reader=_reader("ipvsadm"), lenient=True,
         text="TCP  [fd00::a]:80 wrr persistent 1800 mask ³4\n  -> [fd00::1:2]:8080             Masq    1      0          0\n")
@example(reader=_reader("iptables-save"), lenient=True,
         text="*nat\n:X - [0:0]\n-A X -m statistic --mode nth --every ³ --packet 0 -j ACCEPT\nCOMMIT\n")
@example(reader=_reader("ipset"), lenient=True,
         text="create S hash:ip family inet hashsize 1024 maxelem 65536 timeout 600\nadd S 10.0.0.1 timeout ³500\n")
@example(reader=_reader("ipset"), lenient=True,
         text="Name: S\nType: hash:ip\nRevision: 4\nHeader: family inet hashsize 1024 maxelem 65536\nSize in memory: 100\n"
              "References: 0\nNumber of entries: ³\nMembers:\n")
@given(reader=st.sampled_from(READERS), text=st.text(max_size=60), lenient=st.booleans())
def test_short_texts_and_regressions(reader, text, lenient):
    read_and_use(reader, text, lenient)


STRUCTURED = [r for r in READERS if r.structured]


@pytest.mark.parametrize("reader", STRUCTURED, ids=_reader_ids)
@_settings(250)
@given(data=st.data(), ops=OBJECT_OPS, as_yaml=st.booleans())
def test_mutated_objects_give_an_answer_or_a_kptrace_error(reader, data, ops, as_yaml):
    path = data.draw(st.sampled_from(fixtures_of(reader)), label="fixture")
    text = mutate_objects(_fixture_texts()[path], ops, as_yaml)
    read_and_use(reader, text, False)


# ---------------------------------------------------------------- the command line itself

def _cli(args: list[str]) -> tuple[int, str, str]:
    from kptrace.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


LOAD = next(r for r in READERS if r.name == "load")


@_settings(50)
@given(data=st.data(), ops=st.lists(LINE_OPS, min_size=1, max_size=4), command=st.sampled_from(["parse", "packet", "svc"]))
def test_the_commands_exit_with_a_documented_code(tmp_path_factory, monkeypatch, data, ops, command):
    """`kptrace parse FILE`, `packet --dump FILE --dst ...` and `svc ... --dump FILE` on mutated fixtures:
    an answer or a message, never "internal error" (exit 70) or a traceback."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("KPTRACE_DEBUG", raising=False)
    path = data.draw(st.sampled_from(fixtures_of(LOAD)), label="fixture")
    text = mutate(_fixture_texts()[path], ops)
    f = tmp_path_factory.mktemp("cli") / Path(path).name
    f.write_bytes(text.encode("utf-8", "surrogateescape"))
    args = {"parse": ["parse", str(f)],
            "packet": ["packet", "--dump", str(f), "--dst", "10.96.0.1:443", "--node-ip", NODE_IP],
            "svc": ["svc", "10.96.0.1:443", "--dump", str(f)]}[command]
    with time_limit():
        code, out, err = _cli(args)
    assert code in (0, 1, 2, 3, 4), f"exit {code}\n{err}"
    assert "Traceback" not in out + err and "internal error" not in err, err


@pytest.mark.parametrize("args", [
    ["parse", "{dump}"],
    ["packet", "--dump", "{dump}", "--dst", "10.106.224.41:8080", "--node-ip", "192.168.193.172"],
], ids=["parse", "packet"])
def test_the_installed_command_on_a_pasted_dump(tmp_path, args):
    """The real entry point, in a process of its own: a dump pasted with a prompt, CRLF and colour codes."""
    text = mutate(_fixture_texts()["fixtures/samples/bootcamp.rules"],
                  [("prompt", 0, "[root@vm01 ~]# ", "iptables-save"), ("crlf",), ("insert", 4000, "\x1b[01;31m"), ("elide", 30, "...")])
    dump = tmp_path / "pasted.txt"
    dump.write_text(text)
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("KPTRACE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "kptrace", *[a.format(dump=dump) for a in args]], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode in (0, 1, 3), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "internal error" not in proc.stderr, proc.stderr


# ---------------------------------------------------------------- property 3: well-formed input round-trips

def _model(rs: Ruleset) -> dict:
    """Tables -> chains -> (policy, parsed rules); the empty built-in chains iptables-save adds are left out."""
    out = {}
    for tname, table in rs.tables.items():
        chains = {}
        for name, c in table.chains.items():
            if c.builtin and not len(c) and c.policy in (None, "ACCEPT"):
                continue
            chains[name] = (c.policy if c.builtin else None, [(r.number, r.base, r.matches, r.target) for r in c.rules])
        out[tname] = chains
    return out


def _outcomes(dp: Dataplane, dst: str, port: int, proto: str, origin: Origin) -> list:
    trace = _trace(dp, dst, port, proto, origin)
    # A table the input has without its built-in chains, and the same table with them empty (as
    # iptables-save writes it), differ by "policy ACCEPT" steps that change nothing: left out.
    return [(o.probability, o.verdict, o.dst, o.src, o.dnat, o.snat, o.masquerade, o.mark, o.delivery, o.reason, o.assumptions,
             [(s.hook, s.table, s.chain, s.rule, s.probability, s.note) for s in o.path if s.note != "policy ACCEPT"])
            for o in trace.outcomes]


def assert_round_trips(rs: Ruleset, node_ips: tuple[str, ...] = (NODE_IP,), packets=()) -> None:
    """read -> write iptables-save -> read: the same model, and the same traces for every Service packet."""
    from kptrace.parsers.iptables_save import parse_iptables_save
    from kptrace.render.iptables_save import format_ruleset

    with time_limit():
        first = _ruleset_dataplane(rs, node_ips)
        written = format_ruleset(rs)
        again = parse_iptables_save(SourceText("written", written), family=rs.family)  # strict: must be clean
        assert not again.errors, [format_diagnostic(d) for d in again.errors]
        second = _ruleset_dataplane(again.ruleset, node_ips)
        assert _model(second.rulesets[rs.family]) == _model(rs), written
        wanted = list(packets) or _packets(first, limit=6)
        for dst, port, proto in wanted:
            for origin in Origin:
                assert _outcomes(second, dst, port, proto, origin) == _outcomes(first, dst, port, proto, origin), \
                    (dst, port, proto, origin, written)


ROUND_TRIP = [r for r in READERS if r.round_trip]


def _well_formed(reader: Reader):
    """The reader's fixtures that read without errors, and their rule sets."""
    texts = _fixture_texts()
    for path in fixtures_of(reader):
        try:
            result = reader.read(texts[path], path, False)
        except KptraceError:
            continue
        yield path, result


@pytest.mark.parametrize("reader", ROUND_TRIP, ids=_reader_ids)
def test_well_formed_fixtures_round_trip_through_iptables_save(reader):
    done = 0
    for _path, result in _well_formed(reader):
        assert_round_trips(result.ruleset)
        done += 1
    assert done >= 10, f"only {done} well-formed {reader.name} fixtures"


# Generated kube-proxy rule sets: Services with endpoints, affinity, masquerade, NodePorts, and filter
# chains of arbitrary (acyclic) jumps and gotos, in kube-proxy's restore form or iptables-save's.

_HASH = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16)
# A comment starting with "-" is refused (see test_round_trip_regressions): left out here until it reads.
_COMMENT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_characters="\x7f"), max_size=24).filter(
    lambda c: not c.startswith("-"))
_OCTET = st.integers(0, 255)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def _filter_rule(draw, chain: str, later: list[str]) -> str:
    parts = [f"-A {chain}"]
    if draw(st.booleans()):
        neg = "! " if draw(st.booleans()) else ""
        parts.append(f"{neg}-{draw(st.sampled_from('sd'))} {draw(_OCTET)}.{draw(_OCTET)}.0.0/{draw(st.integers(8, 32))}")
    proto = draw(st.sampled_from([None, "tcp", "udp"]))
    if proto:
        parts.append(f"-p {proto}")
    if draw(st.booleans()):
        parts.append(f"{'! ' if draw(st.booleans()) else ''}-{draw(st.sampled_from('io'))} {draw(st.sampled_from(['eth0', 'cni0', 'lo', 'cali+']))}")
    if draw(st.booleans()):
        parts.append(f"-m comment --comment {_quoted(draw(_COMMENT))}")
    if proto:
        lo = draw(st.integers(1, 65535))
        hi = draw(st.integers(lo, 65535))
        parts.append(f"-m {proto} --dport {lo}" + (f":{hi}" if hi > lo else ""))
    for module in draw(st.lists(st.sampled_from(["mark", "conntrack", "addrtype", "multiport"]), unique=True, max_size=2)):
        if module == "mark":
            parts.append(f"-m mark {'! ' if draw(st.booleans()) else ''}--mark 0x{draw(st.integers(0, 0xffff)):x}/0x{draw(st.integers(1, 0xffff)):x}")
        elif module == "conntrack":
            parts.append(f"-m conntrack --ctstate {draw(st.sampled_from(['NEW', 'INVALID', 'RELATED,ESTABLISHED']))}")
        elif module == "addrtype":
            parts.append(f"-m addrtype --{draw(st.sampled_from(['dst', 'src']))}-type {draw(st.sampled_from(['LOCAL', 'UNICAST']))}")
        elif proto:
            parts.append(f"-m multiport --dports {','.join(map(str, draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3))))}")
    target = draw(st.sampled_from(["ACCEPT", "DROP", "RETURN", "REJECT", "MARK", "jump", "goto", None]))
    if target in ("jump", "goto"):
        if later:
            parts.append(f"-{'j' if target == 'jump' else 'g'} {draw(st.sampled_from(later))}")
    elif target == "REJECT":
        parts.append("-j REJECT --reject-with icmp-port-unreachable")
    elif target == "MARK":
        parts.append(f"-j MARK --set-xmark 0x{draw(st.integers(0, 0xffff)):x}/0x{draw(st.integers(0, 0xffff)):x}")
    elif target:
        parts.append(f"-j {target}")
    return " ".join(parts)


@st.composite
def kube_proxy_dumps(draw) -> tuple[str, list[tuple[str, int, str]]]:
    """An iptables-save (or kube-proxy restore input) text and packets to its Services."""
    save_form = draw(st.booleans())
    nat_chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    nat = ['-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
           '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
           '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
           '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully']
    services, tail, packets = [], [], []
    for _ in range(draw(st.integers(0, 4))):
        ip = f"10.96.{draw(_OCTET)}.{draw(st.integers(1, 254))}"
        port = draw(st.integers(1, 65535))
        proto = draw(st.sampled_from(["tcp", "udp", "sctp"]))
        spn = _quoted(f"ns{draw(st.integers(0, 9))}/svc-{draw(st.integers(0, 99))}:{draw(_COMMENT)}")
        svc = "KUBE-SVC-" + draw(_HASH)
        nat_chains.append(svc)
        packets.append((ip, port, proto))
        services.append(f"-A KUBE-SERVICES -d {ip}/32 -p {proto} -m comment --comment {spn} -m {proto} --dport {port} -j {svc}")
        if draw(st.booleans()):
            tail.append(f"-A {svc} ! -s 10.244.0.0/16 -d {ip}/32 -p {proto} -m comment --comment {spn} -m {proto} --dport {port} -j KUBE-MARK-MASQ")
        if draw(st.booleans()):
            node_port = draw(st.integers(30000, 32767))
            services.append(f"-A KUBE-NODEPORTS -p {proto} -m comment --comment {spn} -m {proto} --dport {node_port} -j {svc}")
            packets.append((NODE_IP, node_port, proto))
        n = draw(st.integers(0, 4))
        digits = draw(st.sampled_from([5, 10, 11]))
        affinity = draw(st.booleans())
        seps = ["KUBE-SEP-" + draw(_HASH) for _ in range(n)]
        nat_chains += seps
        if affinity:
            tail += [f"-A {svc} -m comment --comment {spn} -m recent --rcheck --seconds 10800 --reap --name {sep} "
                     f"--mask 255.255.255.255 --rsource -j {sep}" for sep in seps]
        for i, sep in enumerate(seps):
            coin = f"-m statistic --mode random --probability {1 / (n - i):.{digits}f} " if i < n - 1 else ""
            tail.append(f"-A {svc} -m comment --comment {spn} {coin}-j {sep}")
            ep = f"10.244.{draw(_OCTET)}.{draw(st.integers(1, 254))}"
            recent = f"-m recent --set --name {sep} --mask 255.255.255.255 --rsource " if affinity else ""
            tail += [f"-A {sep} -s {ep}/32 -m comment --comment {spn} -j KUBE-MARK-MASQ",
                     f"-A {sep} -p {proto} -m comment --comment {spn} {recent}-m {proto} -j DNAT --to-destination {ep}:{draw(st.integers(1, 65535))}"]
    services.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
                    '-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    filter_chains = [f"X{i}" for i in range(draw(st.integers(0, 4)))]
    filt = []
    for i, c in enumerate(filter_chains):
        for _ in range(draw(st.integers(0, 4))):
            filt.append(draw(_filter_rule(c, filter_chains[i + 1:])))
    out = []
    if save_form:
        out += ["# Generated by iptables-save v1.8.9 (nf_tables)", "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    else:
        out.append("*nat")
    out += [f":{c} - [0:0]" for c in nat_chains]
    if save_form:
        out += ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']
    out += nat + services + tail + ["COMMIT"]
    out += ["*filter"] + ([":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]"] if save_form else [])
    out += [f":{c} - [0:0]" for c in filter_chains]
    if save_form and filter_chains:
        out += [f"-A {hook} -j X0" for hook in ("INPUT", "FORWARD", "OUTPUT")]
    out += filt + ["COMMIT"]
    packets += [(f"10.{draw(_OCTET)}.{draw(_OCTET)}.{draw(_OCTET)}", draw(st.integers(1, 65535)), draw(st.sampled_from(["tcp", "udp"])))]
    return "\n".join(out) + "\n", packets


def _round_trip_text(text: str, packets) -> None:
    from kptrace.parsers.iptables_save import parse_all_rules, parse_iptables_save

    result = parse_iptables_save(SourceText("generated", text))
    parse_all_rules(result)
    assert not result.errors, [format_diagnostic(d) for d in result.errors]
    assert_round_trips(result.ruleset, packets=packets[:6])


@_settings(120)
@given(dump=kube_proxy_dumps())
def test_generated_rule_sets_round_trip_through_iptables_save(dump):
    _round_trip_text(*dump)


# Well-formed dumps that did not round-trip (kept apart, so that the generated examples run meanwhile).
@_settings(1)
@example(text='*filter\n:X - [0:0]\n-A X -m comment --comment "-x" -j ACCEPT\nCOMMIT\n')  # fixed: a comment starting with "-"
@given(text=st.just("*filter\n:X - [0:0]\n-A X -j ACCEPT\nCOMMIT\n"))
def test_round_trip_regressions(text):
    _round_trip_text(text, [("10.0.0.1", 80, "tcp")])
