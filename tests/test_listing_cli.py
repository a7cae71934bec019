"""What people paste, as they paste it: `iptables -L` listings through --dump (and stdin) into svc and
packet, giving what the same rules give as iptables-save; counters from `-L -v -x` beside the prediction;
and the format detection that says what an input is, or that it cannot tell."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import FIXTURES, require_netns

LISTINGS = FIXTURES / "listings"




def _svc(run, *dumps: str, query: str = "yaobank/summary", stdin: str | None = None) -> dict:
    args = ["svc", query, "--node-ip", "10.240.0.11", "-o", "json"]
    for d in dumps:
        args += ["--dump", d]
    code, out, err = run(*args, stdin=stdin)
    assert code == 0, err
    return json.loads(out)["services"][0]


@pytest.mark.parametrize("form", ["L-n-v", "L-n-v-x-line-numbers", "S-v", "L-n"])
def test_a_listing_gives_what_the_dump_gives(run, form):
    """The nat and filter tables listed, read as the dump of the same namespace."""
    saved = _svc(run, str(LISTINGS / "yaobank" / "save.rules"))
    listed = _svc(run, str(LISTINGS / "yaobank" / f"nat.{form}.txt"), str(LISTINGS / "yaobank" / f"filter.{form}.txt"))
    assert [(e["address"], e["share"]) for e in listed["endpoints"]] == [(e["address"], e["share"]) for e in saved["endpoints"]]
    for a, b in zip(listed["traces"], saved["traces"]):
        assert [(o["dnat"], o["verdict"], o["probability_exact"], o["masquerade"]) for o in a["outcomes"]] == \
               [(o["dnat"], o["verdict"], o["probability_exact"], o["masquerade"]) for o in b["outcomes"]]


def test_counters_of_an_exact_listing_are_the_dumps(run):
    saved = _svc(run, str(LISTINGS / "yaobank-modern" / "save.rules"), query="yaobank/customer")
    listed = _svc(run, str(LISTINGS / "yaobank-modern" / "nat.L-n-v-x-line-numbers.txt"), query="yaobank/customer")
    key = lambda c: [(e["address"], e["connections"], e["predicted"]) for e in c["endpoints"]]  # noqa: E731
    assert key(listed["counters"]) == key(saved["counters"])
    assert listed["counters"]["total"] == saved["counters"]["total"] == 153


@pytest.mark.netns
def test_one_pasted_chain_from_stdin_gives_the_shares_and_says_what_is_missing(run, tmp_path):
    """`iptables -t nat -L KUBE-SVC-… -n -v | kptrace svc --dump - yaobank/summary`, with the real tool's text."""
    require_netns("iptables-nft-restore")
    ns = f"kpt-paste-{tmp_path.name[-12:]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "iptables-nft-restore"], input=(FIXTURES / "samples" / "yaobank.rules").read_text(),
                       text=True, check=True)
        listing = subprocess.run(["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-L", "KUBE-SVC-OIQIZJVJK6E34BR4", "-n", "-v"],
                                 capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    v = _svc(run, "-", stdin=listing)
    assert v["name"] == "yaobank/summary:http"
    assert [e["share"] for e in v["endpoints"]] == ["1/2", "1/2"]
    assert any("continues in KUBE-SEP-" in n and "not in this input" in n for n in v["notes"])


def test_packet_through_a_listing_cites_listing_lines(run):
    code, out, err = run("packet", "--dump", str(LISTINGS / "yaobank" / "nat.L-n-v.txt"), "--dst", "198.19.40.210:80",
                         "--node-ip", "10.240.0.11", "-o", "json")
    assert code == 0, err
    outcomes = json.loads(out)["outcomes"]
    assert sorted(o["dnat"] for o in outcomes) == ["198.19.21.67:80", "198.19.22.130:80"]
    assert all(s["source"].endswith("nat.L-n-v.txt") for o in outcomes for s in o["path"] if not s["synthetic"])


def test_an_input_nothing_recognises_is_said_at_its_first_line(run, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("\n# my notes\nthe service is slow since tuesday\n")
    code, _, err = run("parse", str(junk))
    assert code == 3
    assert f"{junk}:3:1: error: cannot tell what this input is" in err


def test_parse_reads_listings_and_names_the_form(run):
    code, out, err = run("parse", str(LISTINGS / "yaobank" / "nat.L.txt"))
    assert code in (0, 1), err  # names (no -n) may leave warnings; never an error on the tool's own output
    assert "KUBE-SERVICES" in out or "nat" in out
