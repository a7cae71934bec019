"""``grammars/ipvsadm.toml`` loaded (the listing variants and their columns, schedulers, forwarding methods,
ipvsadm-save's options, port names), and the pyparsing grammar of each line kind, which says where and why
a line the fast readers did not take goes wrong."""

from __future__ import annotations

import functools
import re
import tomllib
from typing import Any, NamedTuple

from kptrace.model.addr import is_uint
from kptrace.model.ipvs import RealServer, Scheduler, canonical_address
from kptrace.parsers.grammar import grammar_path
from kptrace.parsers.linereader import diagnose

__all__ = ["DOTTED_DIGITS", "HOST", "V4", "IpvsadmGrammar", "Plan", "Variant", "diagnose_line", "ipvsadm_grammar", "line_grammar",
           "plan_of", "scheduler_info"]

#: a dotted quad as inet_ntop prints it (no leading zeros)
V4 = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
DOTTED_DIGITS = re.compile(r"[0-9.]+")
_TOKEN = re.compile(r"\S+")


class Variant(NamedTuple):
    name: str
    title: tuple[str, ...]
    dest_title: tuple[str, ...]
    service: tuple[tuple[str, str], ...] | None  # None: the scheduler form
    dest: tuple[tuple[str, str], ...]


class Plan(NamedTuple):
    """How to read a variant's real server columns: (token index, RealServer field index) per kind of column;
    stats/rates: (token index, may carry K/M/G/T) in the order of Stats/Rates. Built once per variant."""

    n_tokens: int
    ints: tuple[tuple[int, int], ...]
    forwards: tuple[tuple[int, int], ...]
    tunnels: tuple[tuple[int, int], ...]
    stats: tuple[tuple[int, bool], ...]
    rates: tuple[tuple[int, bool], ...]

    @property
    def plain(self) -> bool:
        """Only numbers and a forwarding method: the columns the read loop reads inline."""
        return not (self.tunnels or self.stats or self.rates)


def plan_of(columns: tuple[tuple[str, str], ...], first: int = 2) -> Plan:
    fields = {name: i for i, name in enumerate(RealServer._fields)}
    ints, forwards, tunnels, stats, rates = [], [], [], [], []
    for ti, (name, kind) in enumerate(columns, start=first):
        if name.startswith("stats."):
            stats.append((ti, kind == "largenum"))
        elif name.startswith("rates."):
            rates.append((ti, kind == "largenum"))
        elif kind == "int":
            ints.append((ti, fields[name]))
        elif kind == "forward":
            forwards.append((ti, fields[name]))
        else:
            tunnels.append((ti, fields[name]))
    return Plan(first + len(columns), tuple(ints), tuple(forwards), tuple(tunnels), tuple(stats), tuple(rates))


class IpvsadmGrammar(NamedTuple):
    """grammars/ipvsadm.toml, loaded."""

    variants: dict[str, Variant]
    largenum: dict[str, int]
    forwards: dict[str, str]  # listing name -> save switch
    protocols: dict[str, tuple[str, ...]]  # TCP -> ("-t", "--tcp-service")
    schedulers: dict[str, Scheduler]
    generic_flags: tuple[str, ...]
    save_options: dict[str, tuple[str, int, str]]  # spelling -> (canonical, arity, kind of the value)
    save_forward: dict[str, str]  # canonical switch -> forwarding method
    port_names: dict[str, dict[str, int]]  # "tcp" -> {"http": 80}


@functools.cache
def ipvsadm_grammar() -> IpvsadmGrammar:
    with open(grammar_path("ipvsadm.toml"), "rb") as f:
        data = tomllib.load(f)
    variants = {}
    for name, v in data["listing"].items():
        service = v["service"]
        variants[name] = Variant(name, tuple(v["title"]), tuple(v["dest_title"]),
                                  None if service == "scheduler" else tuple(tuple(c) for c in service),
                                  tuple(tuple(c) for c in v["dest"]))
    schedulers = {k: Scheduler(k, v["name"], v["kind"], bool(v["weighted"]), tuple(v.get("flags", ())))
                  for k, v in data["scheduler"].items()}
    return IpvsadmGrammar(
        variants=variants,
        largenum=dict(data["largenum"]),
        forwards=dict(data["forward"]),
        protocols={k: tuple(v) for k, v in data["protocols"].items()},
        schedulers=schedulers,
        generic_flags=tuple(data["scheduler_flags"]["generic"]),
        save_options={k: (v[0], len(v) - 1, v[1] if len(v) > 1 else "") for k, v in data["save"]["options"].items()},
        save_forward=dict(data["save"]["forward"]),
        port_names={k: dict(v) for k, v in data["port_names"].items()},
    )


def scheduler_info(name: str) -> Scheduler | None:
    """What the grammar data says of a scheduler (kind, weighted, its flags), None for an unknown one.

    >>> scheduler_info("rr").kind, scheduler_info("sh").flags
    ('rotation', ('sh-fallback', 'sh-port'))
    """
    return ipvsadm_grammar().schedulers.get(name)


@functools.cache
def line_grammar(kind: str, variant: str = "default"):
    """The pyparsing grammar of one line kind: ``version``, ``title``, ``dest_title``, ``service``,
    ``dest`` (of a listing ``variant``), ``save_service`` or ``save_dest``. Parse actions check
    addresses and numbers, so a parse stops at the first wrong token."""
    import pyparsing as pp

    g = ipvsadm_grammar()

    def check(fn, what):
        def action(s, loc, toks):
            try:
                return fn(toks[0])
            except ValueError as e:
                raise pp.ParseFatalException(s, loc, f"{e}" if str(e) else f"expected {what}") from None
        return action

    integer = pp.Regex(r"\d+").set_name("a number").set_parse_action(lambda t: int(t[0]))
    largenum = pp.Regex(r"\d+[KMGT]?").set_name("a number (K/M/G/T allowed)")
    word = pp.Regex(r"\S+").set_name("a value")
    forward = pp.one_of(list(g.forwards), as_keyword=True).set_name(f"a forwarding method ({', '.join(g.forwards)})")
    host = pp.Regex(r"\[[^\]\s]*\]|[^\s:\[\]]+").set_name("an address or host name")
    host.set_parse_action(check(_check_host, "an address or host name"))
    port = pp.Regex(r"[^\s:]+").set_name("a port").set_parse_action(check(_check_port, "a port"))
    # No set_name on composites: pyparsing would put the name in place of the message of a check inside.
    endpoint = pp.Group(host("host") + pp.Optional(pp.Suppress(":") + pp.Optional(port("port"))))
    columns = {"int": integer, "largenum": largenum, "word": word, "tunnel": word, "forward": forward}

    if kind == "version":
        return (pp.Keyword("IP") + pp.Keyword("Virtual") + pp.Keyword("Server") + pp.Keyword("version")
                - pp.Regex(r"\d+(\.\d+)*")("version") - pp.Suppress("(size=") - integer("size") - pp.Suppress(")") - pp.StringEnd())
    if kind == "title":
        return pp.Keyword("Prot") - pp.Keyword("LocalAddress:Port") - pp.ZeroOrMore(word)("words") - pp.StringEnd()
    if kind == "dest_title":
        return pp.Literal("->") + pp.Keyword("RemoteAddress:Port") - pp.ZeroOrMore(word)("words") - pp.StringEnd()
    if kind in ("service", "dest"):
        v = g.variants[variant]
        if kind == "dest":
            cols = [columns[k](n) for n, k in v.dest]
            return pp.Literal("->") - endpoint("endpoint") - pp.And(cols) - pp.StringEnd() if cols else \
                pp.Literal("->") - endpoint("endpoint") - pp.StringEnd()
        proto = pp.one_of(["TCP", "UDP", "SCTP"], as_keyword=True)("protocol").set_name("a protocol (TCP, UDP, SCTP or FWM)")
        head = (proto - endpoint("endpoint")) | (pp.Keyword("FWM")("protocol") - integer("fwmark") - pp.Optional(pp.Keyword("IPv6"))("ipv6"))
        if v.service is None:
            sched = pp.Regex(r"[a-z][a-z0-9]*").set_name("a scheduler (rr, wrr, lc, sh, ...)")("scheduler")
            flags = pp.Suppress("(") - pp.DelimitedList(pp.Regex(r"[a-z0-9-]+").set_name("a scheduler flag"))("flags") - pp.Suppress(")")
            mask = pp.Regex(r"\d+(\.\d+){3}|\d+").set_name("a netmask")
            persistent = pp.Keyword("persistent") - integer("persistent") + pp.Optional(pp.Keyword("mask") - mask("netmask")) \
                + pp.Optional(pp.Keyword("pe") - word("pe"))
            rest = sched + pp.Optional(flags) + pp.Optional(persistent) + pp.Optional(pp.Keyword("ops")("ops"))
        else:
            rest = pp.And([columns[k](n) for n, k in v.service])
        return head - rest - pp.StringEnd()
    if kind in ("save_service", "save_dest"):
        svc_opt = pp.Regex(r"(?:-t|-u|--tcp-service|--udp-service|--sctp-service)(?=\s|$)").set_name("-t, -u or --sctp-service")
        fwm_opt = pp.Regex(r"(?:-f|--fwmark-service)(?=\s|$)").set_name("-f")
        service = (svc_opt("service_option") - endpoint("endpoint")) | (fwm_opt("service_option") - integer("fwmark"))
        def words(options):  # whole words: "-s" but not "-sx" (one_of's keywords need \b, which "-" lacks)
            return pp.Regex("(?:" + "|".join(re.escape(o) for o in sorted(options, key=len, reverse=True)) + r")(?=\s|$)")

        values = {"int": integer, "endpoint": endpoint("real_server"), "name": pp.Regex(r"[A-Za-z0-9_.-]+").set_name("a name"),
                  "netmask": pp.Regex(r"\d+(\.\d+){3}|\d+").set_name("a netmask"),
                  "flags": pp.Regex(r"[a-z0-9-]+(,[a-z0-9-]+)*").set_name("scheduler flags")}
        by_kind: dict[str, list[str]] = {}
        for o, (_, arity, value_kind) in g.save_options.items():
            by_kind.setdefault(value_kind if arity else "", []).append(o)
        option = pp.Group(pp.MatchFirst([words(opts) - values[k] if k else words(opts) for k, opts in by_kind.items()])).set_name("an ipvsadm option")
        command = pp.Keyword("-A" if kind == "save_service" else "-a")
        return command - service - pp.ZeroOrMore(option)("options") - pp.StringEnd()
    raise ValueError(f"no grammar for line kind {kind!r}")


def _check_host(text: str) -> Any:
    host = text[1:-1] if text.startswith("[") else text
    if text.startswith("[") or ":" in host or DOTTED_DIGITS.fullmatch(host):
        return canonical_address(host)
    if not HOST.fullmatch(host):
        raise ValueError(f"{text!r} is neither an address nor a host name")
    return text


def _check_port(text: str) -> Any:
    if is_uint(text):
        if int(text) > 65535:
            raise ValueError(f"port {text} is out of range (0-65535)")
        return int(text)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", text):
        raise ValueError(f"{text!r} is neither a port number nor a service name")
    return text


def diagnose_line(line: str, kind: str, variant: str) -> tuple[int, int, str]:
    """Where and why the grammar refuses ``line``: (column, length, message). Column 0: it does not."""
    def end_message(found: str) -> str:
        return f"unknown option {found!r}" if kind.startswith("save") and found.startswith("-") else f"unexpected {found!r}"

    return diagnose(line_grammar(kind, variant), line, end_message, _TOKEN)
