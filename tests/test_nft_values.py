"""Values nft -f refuses (addresses, prefixes, ports, marks out of range) are input errors with
file:line:col: `kptrace parse` reports every one, and a trace refuses the first one it reaches (exit 3),
never answering from a value the kernel would not hold. No valid fixture gets an error."""

from __future__ import annotations

import tomllib

import pytest
from conftest import CASES, ROOT

CASE = CASES / "nft-values" / "bad-values.nft"
EXPECT = tomllib.loads((CASES / "nft-values" / "bad-values.expect.toml").read_text())["error"]
NFT = ROOT / "fixtures" / "nft"
FORMS = sorted(p for p in NFT.iterdir() if p.suffix in (".nft", ".knft", ".json") and not p.name.endswith(".cluster.json"))




def test_parse_reports_every_bad_value(run):
    code, out, err = run("parse", str(CASE))
    assert code == 3
    got = [line.split(": error: ") for line in err.splitlines() if ": error: " in line]
    want = [[f"{CASE}:{e['line']}:{e['col']}", e["message"]] for e in EXPECT]
    assert got == want
    assert "Traceback" not in err


@pytest.mark.parametrize("bad", EXPECT, ids=[e["message"] for e in EXPECT])
def test_a_trace_refuses_the_bad_value_it_reaches(bad, tmp_path, run):
    lines = CASE.read_text().splitlines()
    others = {e["line"] for e in EXPECT} - {bad["line"]}
    kept = [("#" + line if n in others else line) for n, line in enumerate(lines, 1)]  # same line numbers
    path = tmp_path / "one-bad.nft"
    path.write_text("\n".join(kept) + "\n")
    code, out, err = run("packet", "--dump", str(path), "--dst", "10.0.0.1:80", "--src", "10.2.0.1")
    assert code == 3, out + err
    first = next(line for line in err.splitlines() if ": error: " in line)
    assert first == f"{path}:{bad['line']}:{bad['col']}: error: {bad['message']}"
    assert "^" in err and "Traceback" not in err


@pytest.mark.parametrize("path", FORMS, ids=[p.name for p in FORMS])
def test_no_valid_ruleset_gets_an_error(path, run):
    code, out, err = run("parse", str(path))
    assert code == 0, err
    assert ": error:" not in err


UNREACHED = """table ip t {
	set allowed {
		type ipv4_addr . inet_service
		elements = { 10.0.0.1 . 80,
			     10.0.0.256 . 443 }
	}

	chain pre {
		type filter hook prerouting priority 0; policy accept;
		ip daddr 10.9.9.9 accept
	}

	chain never-jumped-to {
		tcp dport 99999 drop
	}
}
"""


def test_every_command_refuses_a_bad_value_no_trace_reaches(tmp_path, run):
    """As for iptables input: what `parse` refuses, `packet` refuses too, wherever the value stands (a chain no
    base chain jumps to, a set element), not only on the traced path."""
    path = tmp_path / "unreached.nft"
    path.write_text(UNREACHED)
    code, out, err = run("parse", str(path))
    parse_errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 3 and len(parse_errors) == 2, err
    for cmd in (["packet", "--dump", str(path), "--dst", "10.9.9.9:80"], ["svc", "10.9.9.9", "--dump", str(path)]):
        code, out, err = run(*cmd)
        assert code == 3, (cmd, out, err)
        got = [line for line in err.splitlines() if ": error: " in line]
        assert sorted(got) == sorted(parse_errors), (cmd, got, parse_errors)
    code, out, err = run("packet", "--dump", str(path), "--dst", "10.9.9.9:80", "--lenient")
    assert code == 0, err  # --lenient reads what it can
