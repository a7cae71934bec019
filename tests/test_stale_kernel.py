"""Stale conntrack entries against the kernel (issue 15): `kptrace conntrack` flags exactly the entries whose
next packet the kernel still sends to an endpoint the rules no longer have.

For each mode (iptables; nftables in kube-proxy's 1.37 and classic layouts), tests/conntrack_lab.py builds a
dual-stack node in network namespaces with kube-proxy's rules, opens UDP flows and long-lived TCP connections
to its Services (ClusterIPs from a pod and from the node, NodePorts from outside, IPv4 and IPv6) until every
endpoint has some, closes a few TCP connections again (their entries linger in TIME_WAIT), and changes the
rules the way kube-proxy does without touching conntrack: an endpoint removed (UDP ClusterIP, TCP NodePort),
an endpoint replaced by another (TCP ClusterIP, UDP NodePort), two Services deleted (UDP, TCP), one scaled to
zero (UDP), one unchanged. It saves `conntrack -L`, `conntrack -L -f ipv6` and the new rules as the kernel
tools list them, then sends each flow's next packet on the same 5-tuple and sees which endpoint answers.
kptrace reads the saved tables and rules only; the `conntrack -D` commands it prints are then run in the node.

Two tests hold what this run found first in the kernel: the TIME_WAIT entries of closed connections are not
stale (the next SYN on their 5-tuple drops them and is translated by the current rules), and an entry listed
in both tables (`conntrack -L` of conntrack-tools 1.4.7 lists IPv6 too) counts once.

Needs root (skips on a laptop, fails under CI); about 5 s per mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import conntrack_lab as cl
import pytest
from conftest import FIXTURES, require_netns

STALE_FIXTURE = FIXTURES / "conntrack" / "stale"


@dataclass
class Run:
    mode: str
    lab: cl.Lab  # still up: the printed `conntrack -D` commands are run in it
    now: dict  # flow key -> the endpoints its entry point has after the change
    rules: list[Path]  # the rules after the change, as the kernel tools list them
    tables: list[Path]  # `conntrack -L`, `conntrack -L -f ipv6` after the change, before the next packets

    @property
    def flows(self) -> list[cl.Flow]:
        return self.lab.flows


@pytest.fixture(scope="module", params=cl.MODES)
def ran(request, tmp_path_factory):
    """One lab run per mode: flows opened, rules changed, tables and rules saved, each flow's next packet sent."""
    require_netns("conntrack", "nft", "iptables-nft-restore", "ip6tables-nft-restore", "iptables-save", "ip6tables-save")
    mode = request.param
    d = tmp_path_factory.mktemp(f"stale-{mode}")
    with cl.Lab(mode) as lab:
        lab.open_flows()
        lab.change()
        rules, tables = [], []
        for ext, text in lab.saved_rules().items():
            rules.append(d / f"rules{ext}")
            rules[-1].write_text(text)
        for fam, text in lab.conntrack().items():
            tables.append(d / f"conntrack{fam}.txt")
            tables[-1].write_text(text)
        lab.send_next()
        yield Run(mode, lab, {f.key: lab.now_endpoints(f) for f in lab.flows}, rules, tables)


def _kptrace(run, r: Run) -> dict:
    args = ["conntrack", *(a for f in r.rules for a in ("--dump", str(f))), *(a for t in r.tables for a in ("--conntrack", str(t)))]
    if r.mode == "iptables":
        # NodePorts match `-m addrtype --dst-type LOCAL` and deleted ClusterIPs are told by the Service CIDR, neither
        # of which iptables mode's rules say (nftables mode's say both: @nodeport-ips, cluster-ips-check)
        args += [a for ip in cl.NODE_IPS for a in ("--node-ip", ip)] + [a for c in cl.SERVICE_CIDRS for a in ("--service-cidr", c)]
    code, out, err = run(*args, "-o", "json")
    assert code == 1, (code, out, err)
    return json.loads(out)


def _key(s: dict) -> tuple:
    return (s["protocol"], s["src"], s["sport"], s["dst"], s["dport"])


def _table(flows, r: Run, flagged) -> str:
    return "\n".join(f"  {f.label():75s} first {f.first:17s} next {f.next or f.error:17s} now {sorted(r.now[f.key])} "
                     f"{'FLAGGED' if f.key in flagged else ''}" for f in flows)


@pytest.mark.netns
def test_the_kernel_keeps_open_flows_on_their_endpoint(ran):
    """The lab did what the scenario needs: every open flow's next packet reached the endpoint its first did (the
    conntrack entry, not the new rules), and each change left flows on a removed endpoint and on a current one."""
    flows, now = ran.flows, ran.now
    problems = [f.label() + f": {f.error}" for f in flows if f.next is None]
    problems += [f"{f.label()}: first {f.first}, next {f.next}" for f in flows if not f.closed and f.next != f.first]
    assert not problems, "\n".join(problems)
    stale = {f.service for f in flows if not f.closed and f.next not in now[f.key]}
    kept = {f.service for f in flows if not f.closed and f.next in now[f.key]}
    assert stale == {"web", "dns", "api", "lobby", "syslog", "legacy", "statsd"}, stale
    assert kept == {"web", "dns", "api", "lobby", "static"}, kept
    # A closed TCP connection's entry (TIME_WAIT) does not hold its 5-tuple: the kernel drops it at the next SYN
    # and NATs the new connection by the rules of now (nf_conntrack_proto_tcp: a reopened connection).
    closed = [f for f in flows if f.closed]
    assert {f.service for f in closed} == {"web", "api", "static"}
    assert all(f.next in now[f.key] for f in closed), _table(closed, ran, set())


@pytest.mark.netns
def test_kptrace_flags_exactly_the_open_flows_sent_to_a_removed_endpoint(ran, run):
    flows, now = ran.flows, ran.now
    report = _kptrace(run, ran)
    flagged = {_key(s): s for s in report["stale"]}
    open_flows = [f for f in flows if not f.closed]
    kernel = {f.key for f in open_flows if f.next not in now[f.key]}
    got = {f.key for f in open_flows if f.key in flagged}
    assert got == kernel, (f"{ran.mode}: flagged but the kernel sends the next packet to a current endpoint: "
                           f"{sorted(got - kernel)}; not flagged but sent to a removed one: {sorted(kernel - got)}\n"
                           + _table(flows, ran, flagged))
    assert {f.family for f in open_flows if f.key in flagged} == {4, 6}
    assert set(flagged) <= {f.key for f in flows}, "flagged entries of no flow of the lab"
    for f in open_flows:
        s = flagged.get(f.key)
        if s is None:
            continue
        assert s["endpoint"] == f.next, (f.label(), s)
        assert s["service"] == (None if f.service in ("syslog", "legacy") else cl.spn(f.service)), (f.label(), s)
        assert s["blackholed"] == (f.proto == "udp"), (f.label(), s)
        fam = "-f ipv6 " if f.family == 6 else ""
        assert s["command"].startswith(f"conntrack -D {fam}-p {f.proto} --orig-dst {f.dst} --orig-port-dst {f.dport} "
                                       f"--reply-src {f.next.rsplit(':', 1)[0].strip('[]')}"), s["command"]


@pytest.mark.netns
def test_kptrace_does_not_flag_closed_tcp_connections(ran, run):
    flagged = {_key(s) for s in _kptrace(run, ran)["stale"]}
    wrong = [f for f in ran.flows if f.closed and f.key in flagged and f.next in ran.now[f.key]]
    assert not wrong, f"{ran.mode}: flagged, but the next packet went to a current endpoint:\n" + _table(wrong, ran, flagged)


def _orig(line: str) -> tuple:
    """A `conntrack -L` line's protocol and original tuple: what names the entry (its timeout changes by the listing)."""
    return (line.split()[0], *[w for w in line.split() if w.split("=")[0] in ("src", "dst", "sport", "dport")][:4])


@pytest.mark.netns
def test_an_entry_listed_twice_counts_once(ran, run, request):
    """A plain `conntrack -L` lists both families with conntrack-tools 1.4.7 (this lab's); older ones listed IPv4
    only (projectcalico/felix#622, 2015; untangle/ngfw_src#397 met the change). So the pair kptrace asks for,
    `conntrack -L` and `conntrack -L -f ipv6` (a bundle's conntrack.txt and conntrack6.txt), lists each IPv6 entry
    twice there. Each entry must still count once."""
    lines = [line for t in ran.tables for line in t.read_text().splitlines()]
    report = _kptrace(run, ran)
    keys = [_key(s) for s in report["stale"]]
    assert len(keys) == len(set(keys)), f"{len(keys) - len(set(keys))} stale entries reported twice"
    assert report["entries"] == len({_orig(line) for line in lines})


@pytest.mark.netns
def test_the_printed_commands_clear_exactly_the_stale_entries(ran, run):
    """Each `conntrack -D` kptrace prints, run in the node: the flagged open flows' entries are gone and nothing
    else is; a stale UDP flow's next packet then goes where the rules lead now (a current endpoint, or nowhere
    when its Service is gone or has none). Runs last for its lab: it changes the node's table."""
    report = _kptrace(run, ran)
    flagged = {_key(s) for s in report["stale"]}
    for cmd in dict.fromkeys(s["command"] for s in report["stale"]):
        ran.lab.node.run(cmd.split(), check=False)  # exit 1 when nothing matched (a group of TIME_WAIT entries since reopened)
    left = {_orig(line) for text in ran.lab.conntrack().values() for line in text.splitlines()}
    listed = lambda f: (f.proto, f"src={f.src}", f"dst={f.dst}", f"sport={f.sport}", f"dport={f.dport}") in left  # noqa: E731
    open_flows = [f for f in ran.flows if not f.closed]
    wrong = [f for f in open_flows if listed(f) == (f.key in flagged)]
    assert not wrong, "entries kept though flagged, or deleted though not:\n" + _table(wrong, ran, flagged)
    # closed connections were reopened to a current endpoint: that entry is no `-D` of an old endpoint's
    assert all(listed(f) for f in ran.flows if f.closed)
    for f in open_flows:
        if f.proto == "udp" and f.key in flagged:
            f.sock.settimeout(0.5)
            try:
                got = cl._ask(f.sock)
            except OSError:  # dropped (a deleted ClusterIP) or rejected (no endpoints)
                got = None
            assert got in ran.now[f.key] if ran.now[f.key] else got is None, (f.label(), got)


def test_the_saved_real_tables_read_as_they_were_observed(run):
    """fixtures/conntrack/stale/ (one run of this lab in nftables mode 1.37, one in iptables mode), without root:
    kptrace flags exactly the open flows whose next packet went to a removed endpoint there."""
    ipt = ["--dump", "node.ip6tables-save", *(a for ip in cl.NODE_IPS for a in ("--node-ip", ip)),
           *(a for c in cl.SERVICE_CIDRS for a in ("--service-cidr", c))]
    for rules, table, observed, extra in (("node.nft", "node.conntrack", "observed.json", []),
                                          ("node.iptables-save", "node-iptables.conntrack", "observed-iptables.json", ipt)):
        extra = [str(STALE_FIXTURE / a) if a.startswith("node.") else a for a in extra]
        code, out, err = run("conntrack", "--dump", str(STALE_FIXTURE / rules), "--conntrack", str(STALE_FIXTURE / table),
                             *extra, "-o", "json")
        assert code == 1, (code, out, err)
        flagged = {_key(s) for s in json.loads(out)["stale"]}
        flows = json.loads((STALE_FIXTURE / observed).read_text())
        keys = lambda fs: {(f["protocol"], f["src"], f["sport"], f["dst"], f["dport"]) for f in fs}  # noqa: E731
        open_flows = [f for f in flows if not f["closed"]]
        assert all(f["next"] == f["first"] for f in open_flows)
        assert keys(f for f in open_flows if f["next"] not in f["now"]) == flagged & keys(open_flows), rules
        assert flagged <= keys(flows), rules
