"""A large table (over the 4 MB a paste is read whole) is read for the stale check with
:meth:`ConntrackReader.only`: most lines counted after one split, the rest built. The report must be the one
the plain reading gives (every entry built, checked one by one), for a real table made by the kernel
(fixtures/conntrack/stale/node.conntrack, against the rules it was listed with) repeated with other client ports,
with IPv6 entries listed twice as conntrack-tools 1.4.7 does, and with ICMP entries and odd lines between.
"""

from __future__ import annotations

import re

from conftest import ROOT

from kptrace.checks.stale import find_stale
from kptrace.load import load_dumps
from kptrace.parsers.conntrack import read_conntrack

STALE = ROOT / "fixtures" / "conntrack" / "stale"
_PORTS = re.compile(r"sport=(\d+) dport=(\d+) (\[UNREPLIED\] )?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")


def _table(path, copies: int) -> int:
    """Write ``copies`` of the kernel's table, each with other client ports; return the entries written."""
    lines = [x for x in (STALE / "node.conntrack").read_text().splitlines() if x.strip()]
    out, v6 = [], []
    for c in range(copies):
        for i, line in enumerate(lines):
            port = 1024 + (c * len(lines) + i) % 64000
            new = _PORTS.sub(lambda m, port=port: f"sport={port} dport={m[2]} {m[3] or ''}src={m[4]} dst={m[5]} sport={m[6]} dport={port}", line)
            out.append(new)
            if ":" in new.split()[3 if new.split()[3].startswith("src=") else 4] and c % 7 == 0:
                v6.append(new)
        if c == copies // 2:
            out.append("icmp     1 29 src=10.0.1.2 dst=172.30.0.42 type=8 code=0 id=77 src=10.180.1.2 dst=10.0.1.2 type=0 code=0 id=77 mark=0 use=1")
    out.extend(v6)  # the IPv6 table listed again
    path.write_text("\n".join(out) + "\n")
    return len(out)


def _report(r):
    return (r.entries, r.service_entries, sorted((s.entry.line, s.service, s.dst, s.endpoint, s.reason, s.blackholed, s.now)
                                                 for s in r.stale), r.notes)


def test_a_large_table_gives_the_report_of_the_plain_reading(tmp_path):
    path = tmp_path / "big.conntrack"
    written = _table(path, 700)
    assert path.stat().st_size > 4 << 20  # streamed, not read whole
    dp = load_dumps([str(STALE / "node.nft")], node_ips=["192.168.0.2", "2001:db8::1"])
    reader = read_conntrack(str(path))
    fast = find_stale(dp, reader)
    plain = find_stale(dp, list(read_conntrack(str(path))))  # a list: every entry built and checked
    assert _report(fast) == _report(plain)
    assert fast.stale and fast.entries < written  # some stale; IPv6 repeats counted once
    # The fast reading took every line it could: all but the stale ones and those whose client decides (the kernel's
    # table is mostly stale entries by design: the rules changed under every flow).
    counted = sum(reader.counted.values())
    assert counted > 0.5 * fast.entries and counted + len(fast.stale) <= fast.entries, (counted, len(fast.stale), reader.counted)


def test_a_bad_line_in_a_large_table_is_still_an_error(tmp_path):
    path = tmp_path / "big.conntrack"
    _table(path, 700)
    lines = path.read_text().splitlines()
    good = lines[20000]
    lines[20000] = good.replace("dst=", "dst=10.0.0.300 dst=", 1).replace(" dst=10.0.0.300 dst=", " dst=10.0.0.300 x=", 1)
    path.write_text("\n".join(lines) + "\n")
    dp = load_dumps([str(STALE / "node.nft")], node_ips=["192.168.0.2", "2001:db8::1"])
    import pytest

    from kptrace.errors import ParseError

    with pytest.raises(ParseError) as e:
        find_stale(dp, read_conntrack(str(path)))
    assert ":20001:" in str(e.value)
