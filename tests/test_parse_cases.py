"""Parser cases as files: ok/ cases parse cleanly and round-trip; errors/ cases snapshot what
`kptrace parse` says (refresh with --update-snapshots, never silently)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CASES, FIXTURES, ROOT

from kptrace.cli.main import main
from kptrace.load import load_dumps, load_texts
from kptrace.model.source import SourceText
from kptrace.parsers.iptables_save import parse_iptables_save
from kptrace.parsers.tokens import tokenize
from kptrace.render.iptables_save import format_rule

OK = sorted((CASES / "parse" / "ok").glob("*.rules"))
ERRORS = sorted((CASES / "parse" / "errors").glob("*.rules"))
REAL_SAVE = sorted(FIXTURES.glob("samples/*.rules*")) + sorted(FIXTURES.glob("realworld/*.iptables-save"))
ALL_DUMPS = REAL_SAVE + sorted(FIXTURES.glob("upstream/*.iptables-save"))


def _header(path: Path) -> dict[str, str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    m = re.match(r"# kptrace-case: (\w+)=(.*)", first)
    return {m.group(1): m.group(2)} if m else {}


def _structure(rule):
    return (rule.chain, rule.base, rule.matches, rule.target)


@pytest.mark.parametrize("path", OK, ids=lambda p: p.stem)
def test_ok_case_parses_and_round_trips(path):
    dp = load_dumps([str(path)], full=True)
    errors = [d for d in dp.diagnostics if d.severity == "error"]
    assert not errors, errors
    warnings = [d for d in dp.diagnostics if d.severity == "warning"]
    assert len(warnings) == int(_header(path).get("warnings", 0)), warnings
    rules = [r for rs in dp.rulesets.values() for r in rs.iter_rules() if not r.synthetic]
    assert rules
    again = load_texts([SourceText("again", "\n".join(format_rule(r) for r in rules) + "\n")], lenient=True, full=True)
    rules2 = [r for rs in again.rulesets.values() for r in rs.iter_rules() if not r.synthetic]
    assert [_structure(r) for r in rules2] == [_structure(r) for r in rules]


@pytest.mark.parametrize("path", ALL_DUMPS, ids=lambda p: p.name)
def test_every_fixture_parses_and_round_trips(path):
    dp = load_dumps([str(path)], full=True)
    assert not [d for d in dp.diagnostics if d.severity == "error"]
    for rs in dp.rulesets.values():
        for r in rs.iter_rules():
            if r.synthetic:
                continue
            formatted = format_rule(r)
            if path in REAL_SAVE:
                # Real iptables-save output is already in canonical form: the same tokens come back.
                assert [t for t, _, _ in tokenize(formatted)] == [t for t, _, _ in tokenize(r.text)], r.location
            again = parse_iptables_save(SourceText("x", f"*{r.table}\n:{r.chain} - [0:0]\n{formatted}\nCOMMIT\n"),
                                        family=rs.family, lenient=True)
            (r2,) = list(again.ruleset.iter_rules())
            assert _structure(r2) == _structure(r), r.location


def _run_parse(args, capsys, monkeypatch) -> str:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    from kptrace.cli.common import stderr_console, stdout_console

    stdout_console.cache_clear()  # a console another test made has that test's width: make one at 120 columns
    stderr_console.cache_clear()
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return f"exit {exc.value.code}\n--- stdout\n{out}--- stderr\n{err}"


@pytest.mark.parametrize("path", ERRORS, ids=lambda p: p.stem)
def test_error_case_snapshot(path, capsys, monkeypatch, update_snapshots):
    extra = _header(path).get("args", "").split()
    got = _run_parse(["parse", *extra, str(path.relative_to(ROOT))], capsys, monkeypatch)
    assert "Traceback" not in got
    assert not got.startswith("exit 0\n"), "an error case must not succeed"
    snap = path.with_suffix(".out")
    if update_snapshots or not snap.exists():
        if not update_snapshots:
            pytest.fail(f"no snapshot {snap.name}: run pytest --update-snapshots and review it")
        snap.write_text(got)
    assert got == snap.read_text()


@pytest.mark.parametrize("path", ALL_DUMPS, ids=lambda p: p.name)
def test_fast_tokenizer_agrees_with_the_full_one(path):
    from kptrace.parsers.tokens import fast_tokens

    for line in path.read_text().splitlines():
        fast = fast_tokens(line)
        if fast is not None:
            assert fast == [t for t, _, _ in tokenize(line)], line


@pytest.mark.parametrize("path", [p for p in ERRORS if not p.stem.endswith("-strict")], ids=lambda p: p.stem)
@pytest.mark.parametrize("command", [["packet", "--dst", "10.96.0.50:80"], ["svc", "10.96.0.50:80"]], ids=["packet", "svc"])
def test_every_command_refuses_what_parse_refuses(path, command, capsys, monkeypatch):
    """Issue 12: without --lenient, a command given a file that `kptrace parse` refuses (exit 3) exits 3 with the
    same first error, even when the trace would never reach the broken rule."""
    extra = _header(path).get("args", "").split()
    parsed = _run_parse(["parse", *extra, str(path.relative_to(ROOT))], capsys, monkeypatch)
    assert parsed.startswith("exit 3\n"), parsed  # (the -strict cases are warnings: parse exits 1 only with --strict)
    first_error = next(line for line in parsed.split("--- stderr\n", 1)[1].splitlines() if "error:" in line)
    got = _run_parse([command[0], *command[1:], "--dump", str(path.relative_to(ROOT)), *extra], capsys, monkeypatch)
    assert got.startswith("exit 3\n"), got
    assert first_error in got, got
