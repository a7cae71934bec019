"""Terminal output (issue 17): no table cuts an address at any width, pipes get plain text, -o wide is one
line a row, and long traces print what every outcome shares once.

The cases are data (tests/cases/terminal/*.toml: a command line each, over the bundled fixtures); each runs
as a user would, on a terminal of 60, 80 and 120 columns, with -o wide, and into a pipe.
"""

from __future__ import annotations

import re
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

from kptrace.cli.common import stdout_console
from kptrace.render.text import shared_suffix
from kptrace.tracer.result import Step

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "tests" / "cases" / "terminal").glob("*.toml"))

#: IP:port as kptrace prints it: a.b.c.d:port or [v6]:port; a cut or folded address either fails to match or
#: matches a different (shorter) string
ADDRESS = re.compile(r"\[[0-9a-fA-F:.]+\]:\d+|(?<![\w.:])\d{1,3}(?:\.\d{1,3}){3}:\d+(?![\d.])")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX = re.compile("[\u2500-\u259f]")  # box drawing and block elements


def _case(path: Path) -> dict:
    return tomllib.loads(path.read_text())


@pytest.fixture
def kptrace(run, monkeypatch):
    """``kptrace(args, columns=None)``: stdout of the command; ``columns``: on a terminal that wide, else a pipe."""

    def _kptrace(args: list[str], columns: int | None = None) -> str:
        if columns is None:
            monkeypatch.setenv("TTY_COMPATIBLE", "0")
            monkeypatch.setenv("COLUMNS", "80")  # what a pipe reports: its output must not care
        else:
            monkeypatch.setenv("TTY_COMPATIBLE", "1")
            monkeypatch.setenv("COLUMNS", str(columns))
            monkeypatch.delenv("NO_COLOR", raising=False)
        stdout_console.cache_clear()  # the console reads its width when made
        try:
            _, out, _ = run(*args)
        finally:
            stdout_console.cache_clear()
        return out

    return _kptrace


def _addresses(text: str) -> list[str]:
    return sorted(ADDRESS.findall(ANSI.sub("", text)))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_pipe_output_is_plain_text(path, kptrace):
    out = kptrace(_case(path)["args"])
    assert out.strip()
    assert not ANSI.search(out), "ANSI escape in piped output"
    bad = BOX.search(out)
    assert bad is None, f"box drawing in piped output: {out[max(0, bad.start() - 60):bad.end() + 20]!r}"
    assert not re.search(r"\d…", out), "an ellipsis after a digit: something was cut"


# A case whose command's JSON holds more than its text shows (e.g. every Service's expected endpoints) says so
# with json_addresses_shown = false and is left out here (not skipped: under CI a skip is a failure).
@pytest.mark.parametrize("path", [p for p in CASES if _case(p).get("json_addresses_shown", True)], ids=lambda p: p.stem)
def test_pipe_shows_every_address_the_json_has(path, kptrace):
    case = _case(path)
    shown = set(_addresses(kptrace(case["args"])))
    data = set(_addresses(kptrace([*case["args"], "-o", "json"])))
    assert data <= shown, f"addresses in the data but not (whole) in the output: {sorted(data - shown)}"


@pytest.mark.parametrize("columns", [60, 80, 120, "wide"])
@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_terminal_keeps_every_address_whole(path, columns, kptrace):
    """Every IP:port of the (never wrapped) piped output, as often, on a terminal of that width."""
    args = _case(path)["args"]
    whole = _addresses(kptrace(args))
    if columns == "wide":
        out = kptrace([*args, "-o", "wide"], columns=60)
    else:
        out = kptrace(args, columns=columns)
    assert _addresses(out) == whole
    if columns != "wide":
        assert BOX.search(out), "a terminal table has its header rule"


def test_cases_have_addresses_to_keep(kptrace):
    """The address checks above are not empty: most cases print addresses."""
    with_addresses = [p.stem for p in CASES if _addresses(kptrace(_case(p)["args"]))]
    assert len(with_addresses) >= len(CASES) - 1, with_addresses


PACKET = [
    "packet",
    "--dump",
    "fixtures/samples/bootcamp.rules",
    "--dst",
    "10.106.224.41:8080",
    "--node-ip",
    "192.168.193.172",
    "--from",
    "external",
]


def _table(out: str, header_start: str) -> list[str]:
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if ANSI.sub("", line).startswith(header_start))
    table = []
    for line in lines[i:]:
        plain = ANSI.sub("", line)
        if plain.startswith("#") and plain[1:2].isdigit():  # the first path tree
            break
        table.append(plain)
    return table


def test_pipe_table_is_aligned(kptrace):
    out = kptrace(PACKET)
    header, *rows = _table(out, "#  probability")
    assert len(rows) == 3
    for name in ("verdict", "destination", "source", "mark", "why"):
        col = header.index(name)
        for row in rows:
            assert row[col] != " " and (col == 0 or row[col - 1] == " "), (name, row)


@pytest.mark.parametrize("columns", [60, 80])
def test_narrow_terminal_moves_why_under_the_row(columns, kptrace):
    out = kptrace(PACKET, columns=columns)
    table = _table(out, "#")
    assert "why" not in table[0]
    unders = [line for line in table if line.strip().startswith("why:")]
    assert len(unders) == 3 and all("forwarded out of the node" in line for line in unders)
    if columns >= 80:  # at 60 the key columns alone are wider (67): they overflow rather than lose a digit
        assert all(len(line) <= columns for line in table)


def test_wide_terminal_keeps_why_in_its_column(kptrace):
    out = kptrace(PACKET, columns=120)
    header, _, *rows = _table(out, "#")
    assert header.rstrip().endswith("why")
    assert [r.rstrip().endswith("forwarded out of the node") for r in rows] == [True] * 3


DRIFT = [
    "drift",
    "--dump",
    "fixtures/samples/yaobank-modern.rules",
    "--node-name",
    "node1",
    "--cluster-state",
    "fixtures/drift/yaobank/stale-endpoint.cluster.json",
]


@pytest.mark.parametrize("wide", [True, False])
def test_wide_output_is_one_line_a_row(wide, kptrace):
    import json

    (finding,) = json.loads(kptrace([*DRIFT, "-o", "json"]))["findings"]
    out = ANSI.sub("", kptrace([*DRIFT, "-o", "wide"] if wide else DRIFT, columns=60))
    row = [line for line in out.splitlines() if finding["endpoint"] in line and finding["kind"] in line]
    assert len(row) == 1
    # -o wide: the detail and its evidence on the row's line; on 60 columns they wrap under it instead
    on_line = finding["detail"] in row[0] and finding["evidence"][0]["location"] in row[0]
    assert on_line is wide


# Long traces: what every outcome shares at the end (FORWARD, POSTROUTING) is printed once.


def test_shared_suffix_is_printed_once(kptrace):
    out = kptrace(PACKET)
    assert "then, for every outcome above (#1-#3)" in out
    assert out.count("filter/KUBE-FORWARD #1") == 1
    assert out.count("nat/KUBE-POSTROUTING #1") == 1
    assert out.count("then the steps every outcome shares (below)") == 3
    # each outcome's own DNAT stays with it
    for ep in ("10.244.1.3:8080", "10.244.2.2:8080", "10.244.1.2:8080"):
        assert f"→ DNAT to {ep}" in out
    full = kptrace([*PACKET, "--full-path"])
    assert "for every outcome above" not in full
    assert full.count("filter/KUBE-FORWARD #1") == 3


def test_different_endings_are_not_collapsed(kptrace):
    """A pod that is itself an endpoint (hairpin): its connection to itself is masqueraded, the others are not,
    so FORWARD (what the mark became) and POSTROUTING differ and each outcome keeps its own."""
    out = kptrace(
        [
            "packet",
            "--dump",
            "fixtures/samples/yaobank.rules",
            "--dst",
            "198.19.40.210:80",
            "--src",
            "198.19.21.67",
            "--from",
            "pod",
            "--node-ip",
            "10.240.0.11",
        ]
    )
    assert "for every outcome above" not in out
    assert out.count("nat/POSTROUTING #2") == 2
    assert "nat/KUBE-POSTROUTING #3" in out and "nat/KUBE-POSTROUTING #1" in out


def _step(chain: str, rule: int, note: str = "", hook: str = "POSTROUTING") -> Step:
    return Step(hook, "nat", chain, rule, f"-A {chain} -j X", "f", rule, None, note)


def test_shared_suffix_counts_only_identical_steps():
    dnat = [
        _step("KUBE-SEP-A", 1, "DNAT to 10.0.0.1:80", "PREROUTING"),
        _step("KUBE-SEP-B", 1, "DNAT to 10.0.0.2:80", "PREROUTING"),
    ]
    tail = (_step("FORWARD", 1, hook="FORWARD"), _step("KUBE-POSTROUTING", 1, "MASQUERADE"))
    paths = [(d, *tail) for d in dnat]
    assert shared_suffix(paths, [0, 0]) == 2
    # a step whose result names the endpoint (here SNAT to it) differs, and so does everything before it
    other = [
        (dnat[0], tail[0], _step("KUBE-POSTROUTING", 1, "SNAT to 10.0.0.1")),
        (dnat[1], tail[0], _step("KUBE-POSTROUTING", 1, "SNAT to 10.0.0.2")),
    ]
    assert shared_suffix(other, [0, 0]) == 0
    # the same rule taken with a different probability is a different step
    rnd = [(dnat[0], tail[0]._replace(probability=Fraction(1, 2))), (dnat[1], tail[0])]
    assert shared_suffix(rnd, [0, 0]) == 0
    # never into the steps already printed as "same as #1"
    assert shared_suffix([(dnat[0], *tail), (dnat[0], *tail)], [0, 3]) == 0
    assert shared_suffix([(dnat[0], *tail)], [0]) == 0


def test_suffix_of_empty_policies_alone_is_not_collapsed():
    policy = Step("FORWARD", "filter", "FORWARD", None, "", "", 0, None, "policy ACCEPT")
    paths = [
        (_step("KUBE-SEP-A", 1, "DNAT to 10.0.0.1:80"), policy),
        (_step("KUBE-SEP-B", 1, "DNAT to 10.0.0.2:80"), policy),
    ]
    assert shared_suffix(paths, [0, 0]) == 0
    assert shared_suffix(paths, [0, 0], full=True) == 1


# kptrace verify needs the kernel (tests/test_kernel.py); its table is rendered here from result values.


def _verify_results():
    from kptrace.checks.verify import OutcomeCheck, VerifyResult

    checks = tuple(
        OutcomeCheck("ACCEPT", dst, snat, Fraction(1, 3), 330, 1000, 290, 372, True)
        for dst, snat in (("10.244.1.3:8080", True), ("[fd00:10::180:1:12]:8080", None), ("10.244.2.2:8080", False))
    )
    return [VerifyResult("tcp 203.0.113.1 -> 10.106.224.41:8080 from external", None, "agree", checks, True, (), ())]


@pytest.mark.parametrize("columns", [60, 80, 120, None])
def test_verify_table_keeps_addresses_whole(columns):
    from io import StringIO

    from rich.console import Console

    from kptrace.render.layout import terminal_view
    from kptrace.render.text import render_verify

    results = _verify_results()
    if columns is None:  # a pipe: rich finds no terminal and writes no colour
        console = Console(file=StringIO(), width=80)
    else:
        console = Console(file=StringIO(), width=columns, force_terminal=True, color_system="standard")
    with terminal_view(console):
        render_verify(console, results)
    out = console.file.getvalue()
    assert _addresses(out) == sorted(_addresses(results[0].label) + [c.dst for c in results[0].checks])
    assert bool(ANSI.search(out)) is (columns is not None)
    assert bool(BOX.search(out)) is (columns is not None)
