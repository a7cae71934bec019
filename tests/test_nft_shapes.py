"""Rules read by shape (kptrace/parsers/nft/shapes.py) give exactly what the full reader
gives: the same statements, comment and problems, for every rule of every nft text fixture and of both
benchmark layouts (gen_nft, 300 Services), and for hand-written rules where a value's order or spelling
could differ between the two."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import CASES, FIXTURES

from kptrace.parsers.nft import parse_nft_text
from kptrace.parsers.nft.atoms import tokens
from kptrace.parsers.nft.shapes import read_statements, shape_cache
from kptrace.parsers.nft.statements import read_tokens

ROOT = Path(__file__).resolve().parent.parent
TEXTS = sorted(p for d in (FIXTURES / "nft", FIXTURES / "upstream", CASES / "nft" / "src", CASES / "nft" / "kernel")
               for p in d.glob("*") if p.suffix in (".nft", ".knft"))


def _full(text: str, family: str):
    return read_tokens(text, tokens(text), family)


def _rule_texts(text: str, source: str):
    rs = parse_nft_text(text, source, lenient=True)
    for t in rs.tables.values():
        for c in t.chains.values():
            for _line, rule in c.texts():
                yield c.family, rule


def _agree(pairs) -> int:
    n = 0
    for family, text in pairs:
        full = _full(text, family)
        for _ in range(3):  # a shape's first rule is read in full, the second makes its builder, the third uses it
            assert read_statements(text, family) == full, text
        n += 1
    return n


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_shapes_agree_on_fixtures(path):
    _agree(_rule_texts(path.read_text(), str(path)))


@pytest.mark.parametrize("layout", ["classic", "1.37"])
def test_shapes_agree_on_the_benchmark_rulesets(layout):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gen_nft import generate

    assert _agree(_rule_texts(generate(300, 10, 10, layout=layout, affinity_every=5, local_every=3,
                                       lb_source_ranges_every=7, no_endpoints_every=11), "gen")) > 1000


RULES = [
    # anonymous sets and maps: their order follows the values, in either direction
    "ip daddr { 10.0.0.9, 10.0.0.10, 10.0.0.1 } accept",
    "ip daddr { 10.0.0.1, 10.0.0.10, 10.0.0.9 } accept",
    "ip daddr { 10.0.0.1/32, 10.0.0.2 } drop",
    "ip daddr { 10.0.0.2, 10.0.0.1/32 } drop",
    "ip daddr . tcp dport { 10.0.0.2 . 80, 10.0.0.1 . 80 } accept",
    "ip saddr vmap { 10.0.0.2 : goto b, 10.0.0.1 : goto a }",
    "ip saddr vmap { 10.0.0.1 : goto b, 10.0.0.2 : goto a }",
    "meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.0.0.2 . 80, 1 : 10.0.0.1 . 80 }",
    # one value twice, a value that is also a target, targets twice
    "ip saddr 10.0.0.1 ip daddr 10.0.0.1 jump a",
    "ip saddr 10.0.0.1 jump 10.0.0.1",
    "numgen random mod 2 vmap { 0 : goto a, 1 : goto a }",
    # values that are joined, or are no plain address: read in full
    "ip daddr 10.0.0.1,10.0.0.2 accept",
    "ct state established,related accept",
    "ip daddr 10.0.0.1-10.0.0.1 accept",
    "ip daddr 10.0.0.0-10.0.0.255 accept",
    "ip daddr 10.0.0.1:80 accept",
    "ip daddr 010.0.0.1 accept",
    "ip daddr 255.255.255.255 accept",
    "dnat to 10.0.0.1:8080",
    "dnat ip to 10.0.0.1",
    "snat to 10.0.0.1-10.0.0.3",
    "meta mark set 0x4000 ip saddr 10.0.0.1 comment 10.0.0.2",
    "queue num 10.0.0.1",
    # problems: each rule's own
    "ip daddr 10.0.0.1 jump",
    "ip daddr 10.0.0.1 frobnicate 10.0.0.2",
    "ip daddr",
]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("family", ["ip", "ip6", "inet"])
def test_shapes_agree_on_edge_cases(rule, family):
    shape_cache.clear()
    assert _agree([(family, rule)]) == 1
    # the same shape again with other values, after the shape is kept
    other = rule.replace("10.0.0.1", "10.9.9.9").replace("goto a", "goto z")
    assert _agree([(family, other)]) == 1


def test_a_shape_is_kept_and_used():
    shape_cache.clear()
    for i in range(3):
        read_statements(f"ip saddr 10.0.0.{i} jump endpoint-{i}", "ip")
    (build,) = shape_cache.values()
    assert callable(build)
    stmts, comment, problems = read_statements("ip saddr 10.1.2.3 jump endpoint-x", "ip")
    assert (stmts[0].right.text, stmts[1].target, problems) == ("10.1.2.3", "endpoint-x", [])
