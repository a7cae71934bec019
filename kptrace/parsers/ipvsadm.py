"""Parse ``ipvsadm`` output into an :class:`IPVSTable`: ``ipvsadm -L[n]`` listings in every column variant
(plain, ``--stats``, ``--rate``, ``--persistent-conn``, ``--thresholds``, ``--tun-info``; with or without
``-n``) and ``ipvsadm-save [-n]`` rules. :func:`parse_ipvsadm` tells the two apart.

Grammar (the line's first token decides its kind; which columns a listing has, the schedulers, the
forwarding methods and the options of a saved rule are data, in ``grammars/ipvsadm.toml``)::

    listing    := [version] [title dest_title] (service dest*)*
    version    := "IP Virtual Server version" VERSION "(size=" INT ")"
    title      := "Prot" "LocalAddress:Port" WORD*          the words name the variant
    dest_title := "->" "RemoteAddress:Port" WORD*
    service    := PROTO ENDPOINT svc_rest | "FWM" INT ["IPv6"] svc_rest
    svc_rest   := SCHED ["(" FLAG ("," FLAG)* ")"] ["persistent" INT ["mask" MASK] ["pe" NAME]] ["ops"]
                | NUMBER{5}                                  --stats, --rate
    dest       := "->" ENDPOINT COLUMN*                      the variant's columns
    ENDPOINT   := (IPV4 | "[" IPV6 "]" | HOSTNAME) ":" (INT | PORTNAME)    names: a listing without -n

    save       := (add_svc | add_dest)*
    add_svc    := "-A" SERVICE option*                       -s SCHED, -p T, -M MASK, --pe NAME, -o, -b FLAGS
    add_dest   := "-a" SERVICE "-r" ENDPOINT option*          -m|-g|-i, -w W, -x U, -y L, --tun-*
    SERVICE    := ("-t" | "-u" | "--sctp-service") ENDPOINT | "-f" INT ["-6"]

The grammar is written with pyparsing (:func:`line_grammar`), and it is what reports a bad line: the
position it stops at is the diagnostic's column. It is not what reads the good lines: a 10k-Service
node lists ~20,000 virtual services and ~100,000 real servers, and the grammar reads about 2,000 lines
a second (a minute for that node). Each line kind has a fast path (``str.split`` and the variant's
column plan, :class:`_Plan`) that takes every well-formed line, ~7 us a line with the model values
built (0.9 s for that node's 120,000-line listing); a line it cannot take goes to the grammar, which
says where and why. ``tests/test_ipvs_parsers.py`` checks that both read every fixture line the same
way, and pyparsing is imported only when a line needs it.

Pasted text is read too (kptrace/parsers/paste.py): prompts and command lines, fences, quote markers and
colour codes are taken away first, positions stay the original's, and what is partial is marked: a listing
without its header lines is a fragment, and an elided line (``...``) says which virtual services or real
servers may be missing; the table is then ``truncated`` (a service not in it is unknown, not absent).

Without ``-n`` ipvsadm prints host names for addresses and service names for ports, and cuts an IPv4
address:port to 28 characters. Port names are read with the table in the grammar file; a name that
cannot be turned into an address or a port is kept (``host_name``/``port_name``), its address or port
is None, and a warning at its position says so.
"""

from __future__ import annotations

import functools
import re
import tomllib
from socket import AF_INET as _AF_INET, inet_pton as _inet_pton
from typing import Any, NamedTuple

from kptrace.model.addr import is_uint
from kptrace.errors import Diagnostic, ParseError
from kptrace.model.ipvs import (
    IPVSTable, Location, Rates, RealServer, Scheduler, Stats, VirtualService, canonical_address,
)
from kptrace.parsers.detect import find_variant_paste, wrong_format
from kptrace.parsers.grammar import grammar_path
from kptrace.parsers.paste import Paste, clean_paste

__all__ = ["IpvsadmGrammar", "ipvsadm_grammar", "line_grammar", "parse_ipvsadm", "scheduler_info"]

_new = tuple.__new__  # NamedTuple's own __new__ is a Python function: a tenth of a line's cost
_V4 = re.compile(r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_DOTTED_DIGITS = re.compile(r"[0-9.]+")
_TOKEN = re.compile(r"\S+")
#: ipvsadm cuts an IPv4 ADDRESS:PORT printed with names to 28 characters (print_service_entry).
_CUT_AT = 28


# ---------------------------------------------------------------- grammar data

class _Variant(NamedTuple):
    name: str
    title: tuple[str, ...]
    dest_title: tuple[str, ...]
    service: tuple[tuple[str, str], ...] | None  # None: the scheduler form
    dest: tuple[tuple[str, str], ...]


class _Plan(NamedTuple):
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


def _plan(columns: tuple[tuple[str, str], ...], first: int = 2) -> _Plan:
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
    return _Plan(first + len(columns), tuple(ints), tuple(forwards), tuple(tunnels), tuple(stats), tuple(rates))


class IpvsadmGrammar(NamedTuple):
    """grammars/ipvsadm.toml, loaded."""

    variants: dict[str, _Variant]
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
        variants[name] = _Variant(name, tuple(v["title"]), tuple(v["dest_title"]),
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


# ---------------------------------------------------------------- the pyparsing grammar

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
    if text.startswith("[") or ":" in host or _DOTTED_DIGITS.fullmatch(host):
        return canonical_address(host)
    if not _HOST.fullmatch(host):
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


def _diagnose(line: str, kind: str, variant: str) -> tuple[int, int, str]:
    """Where and why the grammar refuses ``line``: (column, length, message). Column 0: it does not."""
    import pyparsing as pp

    try:
        line_grammar(kind, variant).parse_string(line, parse_all=True)
    except pp.ParseBaseException as e:
        loc = e.loc
        m = _TOKEN.match(line, loc) if loc < len(line) else None
        length = (m.end() - loc) if m else 1
        found = m.group(0) if m else ""
        msg = e.msg
        if msg == "Expected end of text":
            msg = (f"unknown option {found!r}" if kind.startswith("save") and found.startswith("-") else f"unexpected {found!r}")
        elif msg.startswith("Expected"):
            msg = "expected " + msg[len("Expected "):] + (f", found {found!r}" if found else ", found the end of the line")
        return loc + 1, length, msg
    return 0, 0, ""


# ---------------------------------------------------------------- fast readers

def _v4_cached(seen: set[str]):
    """Whether ``host`` is a canonical dotted quad (as ``_V4``), remembering the addresses it took: a kube-proxy
    node lists each endpoint once per virtual service of its Service (cluster IP, node ports, load-balancer
    IPs). A set lookup costs 0.05 us, inet_pton 0.6 and the regular expression 1.2 (glibc's inet_pton takes
    exactly the dotted quads without leading zeros that inet_ntop prints)."""
    add = seen.add

    def check(host: str) -> bool:
        if host in seen:
            return True
        try:
            _inet_pton(_AF_INET, host)
        except (OSError, ValueError):
            return False
        add(host)
        return True

    return check


class _Cut(Exception):
    """A line the fast path does not take: the grammar will say why."""


def _int(tok: str) -> int:
    if not is_uint(tok):
        raise _Cut
    return int(tok)


class _Reader:
    """One parse: the lines, the diagnostics, and the readers that share them."""

    def __init__(self, text: str, source: str, lenient: bool) -> None:
        self.g = ipvsadm_grammar()
        self.source = source
        self.lenient = lenient
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        self.ends_with_newline = text.endswith("\n")
        self.lines = text.split("\n")
        if self.ends_with_newline:
            self.lines.pop()
        self.diags: list[Diagnostic] = []
        self.notes: list[str] = []
        self.unresolved_hosts: dict[str, int] = {}
        self.unresolved_ports: dict[str, int] = {}
        self.resolved_ports: dict[str, int] = {}
        self.numeric = True
        self.cut = False
        self.fragment = False  # a listing without its title lines
        self.multipliers = self.g.largenum

    # -- diagnostics

    def problem(self, severity: str, idx: int, message: str, hint: str = "", col: int = 0, length: int = 0) -> None:
        self.diags.append(Diagnostic(severity, message, self.source, idx + 1, col, self.lines[idx], length, hint))

    def refuse(self, idx: int, kind: str, variant: str, hint: str) -> None:
        """A line the fast path did not take: the grammar says where; a cut last line says so."""
        line = self.lines[idx]
        col, length, msg = _diagnose(line, kind, variant)
        if not col:
            col, length, msg = 1, len(line.split()[0]) if line.split() else 1, "this line does not fit the listing here"
        if idx == len(self.lines) - 1 and not self.ends_with_newline:
            msg = f"the input ends in the middle of a line ({msg})"
            hint = "the listing looks cut off (an interrupted copy?); take it again, or pass --lenient to read what is there"
            self.cut = True
        self.problem("error", idx, msg, hint, col, length)

    def token_col(self, line: str, n: int) -> tuple[int, int]:
        for i, m in enumerate(_TOKEN.finditer(line)):
            if i == n:
                return m.start() + 1, m.end() - m.start()
        return len(line) + 1, 1

    def check_last_line(self) -> None:
        lines = self.lines
        if not self.ends_with_newline and lines and lines[-1].strip() and not lines[-1].lstrip().startswith("#") \
                and not any(d.line == len(lines) and d.severity == "error" for d in self.diags):
            self.problem("warning", len(lines) - 1, "the input does not end with a newline: if it was cut off here, "
                         "this last line may be incomplete", "ipvsadm ends every line; check that the copy is whole")

    def check_scheduler(self, vs: dict, idx: int, line: str, sched_tok: int) -> None:
        info = self.g.schedulers.get(vs["scheduler"])
        if info is None:
            col, length = self.token_col(line, sched_tok)
            self.problem("warning", idx, f"unknown scheduler {vs['scheduler']!r}",
                         f"kptrace knows {', '.join(self.g.schedulers)}; how this one picks a server is not known", col, length)
            return
        allowed = info.flags or self.g.generic_flags
        for f in vs["flags"]:
            if f not in allowed:
                col = line.find(f) + 1
                self.problem("warning", idx, f"{f!r} is not a flag of scheduler {vs['scheduler']} ({', '.join(allowed)})",
                             "ipvsadm shows sh-*/mh-* flags for sh/mh and flag-1..flag-3 for the others", col, len(f))

    # -- values

    def largenum(self, tok: str) -> tuple[int, bool]:
        last = tok[-1:]
        if is_uint(last):
            return _int(tok), True
        mult = self.multipliers.get(last)
        if mult is None:
            raise _Cut
        return _int(tok[:-1]) * mult, False

    def endpoint(self, tok: str, proto: str, idx: int, tok_no: int) -> tuple[str | None, int | None, str | None, str | None]:
        """``(address, port, host_name, port_name)`` of ``ADDRESS:PORT``; names are looked up or reported."""
        if tok[0] == "[":
            host, sep, rest = tok[1:].partition("]")
            if not sep or (rest and rest[0] != ":"):
                raise _Cut
            port_s = rest[1:] if rest else None
            try:
                return self._port(canonical_address(host), port_s, None, proto, idx, tok_no, tok)
            except ValueError:
                raise _Cut from None
        host, sep, port_s = tok.rpartition(":")
        if not sep:
            host, port_s = tok, None
        if _V4.fullmatch(host):
            return self._port(host, port_s, None, proto, idx, tok_no, tok)
        if _DOTTED_DIGITS.fullmatch(host) or not _HOST.fullmatch(host):
            raise _Cut  # 10.0.0.300, or not a name at all: the grammar says which
        self.numeric = False
        self.unresolved_hosts.setdefault(host, idx + 1)
        col, length = self.token_col(self.lines[idx], tok_no)
        cut = len(tok) == _CUT_AT and (port_s is None or port_s == "") and ":" not in host
        self.problem("warning", idx, f"host name {host!r} stands for an address this input does not give"
                     + (" (ipvsadm cut it at 28 characters)" if cut else ""),
                     "ipvsadm printed names (taken without -n); take the listing with -n, or ipvsadm-save -n",
                     col, len(host))
        return self._port(None, port_s, host, proto, idx, tok_no, tok)

    def _port(self, addr: str | None, port_s: str | None, host: str | None, proto: str, idx: int, tok_no: int,
              tok: str) -> tuple[str | None, int | None, str | None, str | None]:
        if port_s is not None and is_uint(port_s):
            port = int(port_s)
            if port > 65535:
                raise _Cut
            return addr, port, host, None
        if port_s is None or port_s == "":
            if host is None:
                raise _Cut  # a numeric address without its port: not something ipvsadm prints
            return addr, None, host, None  # a host name cut before its port: already reported
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", port_s):
            raise _Cut
        self.numeric = False
        port = self.g.port_names.get(proto.lower(), {}).get(port_s)
        if port is not None:
            self.resolved_ports.setdefault(f"{port_s}/{proto.lower()}", port)
        else:
            self.unresolved_ports.setdefault(port_s, idx + 1)
            col, length = self.token_col(self.lines[idx], tok_no)
            cut = len(tok) == _CUT_AT
            self.problem("warning", idx, f"port name {port_s!r} is not one kptrace knows ({proto.lower()})"
                         + (" (ipvsadm may have cut it at 28 characters)" if cut else ""),
                         "ipvsadm printed names from the node's /etc/services (taken without -n); take the "
                         "listing with -n to have port numbers", col + len(tok) - len(port_s), len(port_s))
        return addr, port, host, port_s


# ---------------------------------------------------------------- listings

_SERVICE_WORDS = frozenset(("TCP", "UDP", "SCTP", "FWM"))
_LARGENUM = re.compile(r"\d+[KMGT]?")
_PROTO_NAMES = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_VS_REAL_SERVERS = VirtualService._fields.index("real_servers")
_VS_LOCATION = VirtualService._fields.index("location")
_VS_TEXT = VirtualService._fields.index("text")
_VS_DEFAULTS = {"scheduler": None, "flags": (), "persistent": None, "netmask": None, "one_packet": False,
                "persistence_engine": None, "stats": None, "rates": None}


class _ListingReader(_Reader):
    """``ipvsadm -L[n]`` in any column variant; a fragment without title lines is read by the columns it shows."""

    def read(self) -> tuple[list, str, str | None]:
        g = self.g
        variant: _Variant | None = None
        candidates: list[_Variant] | None = None  # the title's first line seen, its second not yet
        version = None
        services: list = []  # [VirtualService field values, real servers]
        current_rs: list | None = None
        proto = "tcp"
        header_seen = False
        src = self.source
        endpoint = self.endpoint
        dest = self._dest
        plan = _Plan(-1, (), (), (), (), ())
        n_tokens, p_ints, p_forwards, plain = -1, (), (), False
        forwards = g.forwards
        schedulers = g.schedulers
        new = _new
        v4 = _v4_cached(set())

        for idx, line in enumerate(self.lines):
            if not line:
                continue
            c0 = line[0]
            if c0 == " " and current_rs is not None and variant is not None:
                # The fast path: a real server line of a variant already known, ~85% of a big listing.
                toks = line.split()
                if len(toks) == n_tokens and toks[0] == "->":
                    tok = toks[1]
                    host, sep, port_s = tok.rpartition(":")
                    if plain and sep and is_uint(port_s) and v4(host):
                        # _dest inlined, for the variants of plain columns (numbers and a forwarding method):
                        # a function call was a fifth of the line's cost.
                        vals = [host, int(port_s), None, None, None, None, new(Location, (src, idx + 1)), line,
                                None, None, None, None, None, None, None, None]
                        for ti, fi in p_ints:
                            t = toks[ti]
                            if not is_uint(t):
                                break
                            vals[fi] = int(t)
                        else:
                            for ti, fi in p_forwards:
                                t = toks[ti]
                                if t not in forwards:
                                    break
                                vals[fi] = t
                            else:
                                if vals[1] <= 65535:
                                    current_rs.append(new(RealServer, vals))
                                    continue
                    try:
                        current_rs.append(dest(toks, plan, *endpoint(tok, proto, idx, 1), new(Location, (src, idx + 1)), line))
                        continue
                    except (_Cut, ValueError):
                        pass
            elif c0 in "TUS" and variant is not None and variant.service is None:
                # The fast path of a virtual service line: "TCP  10.96.0.10:53 rr" (a plain one: no flags, persistence).
                toks = line.split()
                if len(toks) == 3 and toks[0] in _PROTO_NAMES and toks[2] in schedulers:
                    host, sep, port_s = toks[1].rpartition(":")
                    if sep and is_uint(port_s) and v4(host) and int(port_s) <= 65535:
                        current_rs = []
                        services.append([[toks[0], host, int(port_s), None, toks[2], (), None, None, None,
                                          new(Location, (src, idx + 1)), line, None, None, False, None, 4, None, None],
                                         current_rs])
                        proto = _PROTO_NAMES[toks[0]]
                        continue
            stripped = line.strip()
            if not stripped:
                continue
            first = stripped.split(None, 1)[0]
            if first in _SERVICE_WORDS:
                if variant is None and candidates is None:
                    candidates = self._candidates_from_service(idx, stripped)
                    if len(candidates) == 1:
                        variant, candidates = candidates[0], None
                        plan = _plan(variant.dest)
                        n_tokens, p_ints, p_forwards, plain = plan.n_tokens, plan.ints, plan.forwards, plan.plain
                vs = self._service(idx, line, variant or candidates[0])
                if vs is None:
                    current_rs = None
                    continue
                current_rs = []
                services.append([vs, current_rs])
                proto = vs[0].lower() if vs[0] != "FWM" else "fwm"
                continue
            if first == "->":
                toks = stripped.split()
                if len(toks) > 1 and toks[1] == "RemoteAddress:Port":
                    words = tuple(toks[2:])
                    pool = candidates if candidates is not None else list(g.variants.values())
                    match = [v for v in pool if v.dest_title == words]
                    if not match:
                        col, length = self.token_col(line, 2)
                        self.problem("error", idx, f"unknown column titles {' '.join(words)!r}", _VARIANTS_HINT, col, length)
                        match = pool[:1]
                    variant, candidates = match[0], None
                    plan = _plan(variant.dest)
                    n_tokens, p_ints, p_forwards, plain = plan.n_tokens, plan.ints, plan.forwards, plan.plain
                    header_seen = True
                    continue
                if current_rs is None:
                    if not services:
                        self.problem("error", idx, "a real server line before any virtual service",
                                     "real servers (  -> ...) follow the virtual service they belong to", 1, 2)
                    continue  # else: its virtual service was refused, and that was reported
                if variant is None:
                    variant = self._pick(idx, line, toks, candidates)
                    candidates = None
                    plan = _plan(variant.dest)
                    n_tokens, p_ints, p_forwards, plain = plan.n_tokens, plan.ints, plan.forwards, plan.plain
                try:
                    if len(toks) != plan.n_tokens:
                        raise _Cut
                    current_rs.append(dest(toks, plan, *endpoint(toks[1], proto, idx, 1), new(Location, (src, idx + 1)), line))
                except (_Cut, ValueError):
                    self.refuse(idx, "dest", variant.name, "a real server line is  -> ADDRESS:PORT and the listing's columns")
                continue
            if first == "IP" and stripped.startswith("IP Virtual Server version"):
                m = re.fullmatch(r"IP Virtual Server version (\d+(?:\.\d+)*) \(size=(\d+)\)", stripped)
                if m is None:
                    self.refuse(idx, "version", "default", "a listing starts with IP Virtual Server version X.Y.Z (size=N)")
                elif version is not None or services:
                    self.problem("error", idx, "a second listing starts here", "pass one listing per input", 1, 2)
                else:
                    version = m.group(1)
                header_seen = True
                continue
            if first == "Prot":
                toks = stripped.split()
                if len(toks) < 2 or toks[1] != "LocalAddress:Port":
                    self.refuse(idx, "title", "default", "the title line is Prot LocalAddress:Port ...")
                    continue
                words = tuple(toks[2:])
                candidates = [v for v in g.variants.values() if v.title == words]
                if not candidates:
                    col, length = self.token_col(line, 2)
                    self.problem("error", idx, f"unknown column titles {' '.join(words)!r}", _VARIANTS_HINT, col, length)
                    candidates = [g.variants["default"]]
                variant = None
                header_seen = True
                continue
            if first[0] == "#":
                continue
            if stripped.startswith(("IPVS connection entries", "pro expire state")):
                raise ParseError([Diagnostic("error", "this is ipvsadm's connection table (ipvsadm -Lnc), not its virtual services",
                                             src, idx + 1, 1, line, len(first), "take `ipvsadm -Ln` (or `ipvsadm-save -n`) on the node")])
            if stripped.startswith("Timeout (tcp tcpfin udp)"):
                raise ParseError([Diagnostic("error", "this is `ipvsadm -L --timeout` output, not the virtual services",
                                             src, idx + 1, 1, line, len(first), "take `ipvsadm -Ln` on the node")])
            if first in ("-A", "-a"):
                self.problem("error", idx, "an ipvsadm-save rule inside a listing", "pass a listing and saved rules as separate inputs", 1, 2)
                continue
            self.problem("error", idx, f"not a line of an ipvsadm listing: {first!r}",
                         "a listing has title lines, virtual services (TCP|UDP|SCTP|FWM ...) and real servers (  -> ...); "
                         "a shell prompt or a note pasted in?", 1, len(first))
        self.check_last_line()
        self.fragment = not header_seen and bool(services)
        if self.fragment:
            self.notes.append(f"{src}: no header: read as `ipvsadm -L{'n' if self.numeric else ''}` output"
                              f" ({(variant or (candidates or [g.variants['default']])[0]).name} columns); a fragment: "
                              "a virtual service not in it is unknown, not absent")
            fields, real_servers = services[-1]
            if not real_servers:
                self.notes.append(f"{src}: no real servers are shown for {' '.join(fields[_VS_TEXT].split()[:2])}, the "
                                  "fragment's last virtual service: they may be missing, not absent")
        return services, (variant or (candidates or [g.variants["default"]])[0]).name, version

    def _candidates_from_service(self, idx: int, stripped: str) -> list[_Variant]:
        """No title lines before the first virtual service: the variants its line fits."""
        toks = stripped.split()
        rest = toks[3:] if toks[0] == "FWM" and len(toks) > 2 and toks[2] == "IPv6" else toks[2:]
        variants = self.g.variants.values()
        if not rest or not is_uint(rest[0][:1]):
            return [v for v in variants if v.service is None]
        numeric = [v for v in variants if v.service is not None]
        if len(numeric) > 1:
            self.problem("error", idx, "numbers but no title line: --stats and --rate columns cannot be told apart; read as --stats",
                         "keep the listing's title lines (Prot LocalAddress:Port ...)", 1, len(toks[0]))
        return [self.g.variants["stats"]] if numeric else [self.g.variants["default"]]

    def _pick(self, idx: int, line: str, toks: list[str], candidates: list[_Variant] | None) -> _Variant:
        """The first real server line of a listing whose variant the titles did not settle: the one its columns fit."""
        pool = candidates or [self.g.variants["default"]]
        fits = [v for v in pool if self._fits(v, toks)]
        if len(fits) > 1:
            self.problem("error", idx, f"no title line, and these columns fit {' and '.join('--' + v.name for v in fits)}: read as --{fits[0].name}",
                         "keep the listing's title lines (Prot LocalAddress:Port ...)", 1, 2)
        return (fits or pool)[0]

    def _fits(self, v: _Variant, toks: list[str]) -> bool:
        if len(toks) != len(v.dest) + 2:
            return False
        for (_, kind), tok in zip(v.dest, toks[2:]):
            if kind == "int" and not is_uint(tok):
                return False
            if kind == "largenum" and not _LARGENUM.fullmatch(tok):
                return False
            if kind == "forward" and tok not in self.g.forwards:
                return False
        return True

    def _dest(self, toks: list[str], plan: _Plan, addr, port, hname, pname, loc: Location, line: str) -> RealServer:
        """A real server line's columns, read by the variant's plan (a value that does not fit: _Cut)."""
        vals = [addr, port, None, None, None, None, loc, line, None, None, None, None, None, None, hname, pname]
        for ti, fi in plan.ints:
            t = toks[ti]
            if not is_uint(t):
                raise _Cut
            vals[fi] = int(t)  # ValueError for a non-ASCII digit: the caller takes it as _Cut
        for ti, fi in plan.forwards:
            t = toks[ti]
            if t not in self.g.forwards:
                raise _Cut
            vals[fi] = t
        for ti, fi in plan.tunnels:
            t = toks[ti]
            vals[fi] = None if t == "n/a" else t  # ipvsadm's NA: no tunnel for this server
        if plan.stats:
            vals[12] = self.numbers(toks, plan.stats, Stats)
        if plan.rates:
            vals[13] = self.numbers(toks, plan.rates, Rates)
        return _new(RealServer, vals)

    def numbers(self, toks: list[str], columns: tuple[tuple[int, bool], ...], kind: type) -> tuple:
        vals = []
        exact = True
        for ti, large in columns:
            t = toks[ti]
            if large:
                v, ex = self.largenum(t)
                exact = exact and ex
            else:
                v = _int(t)
            vals.append(v)
        return _new(kind, (*vals, exact))

    def _service(self, idx: int, line: str, variant: _Variant) -> list | None:
        """A virtual service line read slowly (flags, persistence, names, numbers): its VirtualService field values."""
        toks = line.split()
        try:
            if len(toks) < 3:
                raise _Cut
            if toks[0] == "FWM":
                fwmark = _int(toks[1])
                family = 6 if toks[2] == "IPv6" else 4
                rest_at = 3 if family == 6 else 2
                addr = port = hname = pname = None
            else:
                fwmark = None
                addr, port, hname, pname = self.endpoint(toks[1], toks[0].lower(), idx, 1)
                family = None if addr is None else (6 if ":" in addr else 4)
                rest_at = 2
            vs = {"protocol": toks[0], "address": addr, "port": port, "fwmark": fwmark, "family": family,
                  "host_name": hname, "port_name": pname, "location": _new(Location, (self.source, idx + 1)),
                  "text": line, "real_servers": None, **_VS_DEFAULTS}
            rest = toks[rest_at:]
            if variant.service is None:
                self._scheduler_part(rest, vs)
                self.check_scheduler(vs, idx, line, rest_at)
            else:
                if len(rest) != len(variant.service):
                    raise _Cut
                vals = []
                exact = True
                for tok in rest:
                    v, ex = self.largenum(tok)
                    vals.append(v)
                    exact = exact and ex
                if variant.service[0][0].startswith("stats."):
                    vs["stats"] = _new(Stats, (*vals, exact))
                else:
                    vs["rates"] = _new(Rates, (*vals, exact))
            return [vs[f] for f in VirtualService._fields]
        except _Cut:
            self.refuse(idx, "service", variant.name, "a virtual service line is PROTO ADDRESS:PORT and its scheduler "
                        "(FWM MARK [IPv6] for a firewall-mark service)")
            return None

    @staticmethod
    def _scheduler_part(rest: list[str], vs: dict) -> None:
        """``SCHED [(FLAGS)] [persistent T [mask M] [pe NAME]] [ops]`` (print_service_entry's order)."""
        n = len(rest)
        if not n or not re.fullmatch(r"[a-z][a-z0-9]*", rest[0]):
            raise _Cut
        vs["scheduler"] = rest[0]
        i = 1
        if i < n and rest[i][0] == "(":
            if rest[i][-1] != ")" or len(rest[i]) < 3:
                raise _Cut
            vs["flags"] = tuple(rest[i][1:-1].split(","))
            i += 1
        if i < n and rest[i] == "persistent":
            if i + 1 >= n:
                raise _Cut
            vs["persistent"] = _int(rest[i + 1])
            i += 2
            if i + 1 < n and rest[i] == "mask":
                vs["netmask"] = _prefix(rest[i + 1])
                i += 2
            if i + 1 < n and rest[i] == "pe":
                vs["persistence_engine"] = rest[i + 1]
                i += 2
        if i < n and rest[i] == "ops":
            vs["one_packet"] = True
            i += 1
        if i != n:
            raise _Cut

_VARIANTS_HINT = ("kptrace reads ipvsadm -L with no column option, or with --stats, --rate, --persistent-conn, "
                  "--thresholds or --tun-info")


def _prefix(mask: str) -> int:
    """A persistence netmask as a prefix length: ``255.255.255.0`` -> 24; IPv6 prints ``64`` already."""
    if is_uint(mask):
        if int(mask) > 128:
            raise _Cut
        return int(mask)
    if not _V4.fullmatch(mask):
        raise _Cut
    value = int.from_bytes(bytes(int(p) for p in mask.split(".")), "big")
    plen = bin(value).count("1")
    if value != ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF):
        raise _Cut  # a netmask with holes: IPVS takes it, but it has no prefix length
    return plen


# ---------------------------------------------------------------- ipvsadm-save

class _SaveReader(_Reader):
    """``ipvsadm-save [-n]`` (``ipvsadm -S``): -A and -a rules, in the order ipvsadm prints them."""

    def read(self) -> tuple[list, str, str | None]:
        g = self.g
        services: dict[tuple, list] = {}
        svc_keys: dict[str, tuple] = {}  # a service spec as written ("-t 10.0.0.1:80") -> its key
        by_spec: dict[str, list] = {}  # ... -> its [fields, real servers]
        proto_of = {opt: proto for proto, opts in g.protocols.items() for opt in opts}
        switches = {o: g.save_forward[c] for o, (c, _, _) in g.save_options.items() if c in g.save_forward}
        fast_protos = {"-t": "TCP", "-u": "UDP"}
        schedulers = g.schedulers
        src = self.source
        new = _new
        v4 = _v4_cached(set())
        self.refused: set[str] = set()  # services whose -A line was refused: their -a lines are not reported again
        for idx, line in enumerate(self.lines):
            if not line or line.isspace():
                continue
            if line[1:3] == "a " and line[0] == "-":
                toks = line.split()
                # The fast path: "-a -t|-u SERVICE -r ADDRESS:PORT -m|-g|-i -w WEIGHT", 5 of every 6 lines.
                if len(toks) == 8 and toks[3] == "-r" and toks[6] == "-w":
                    entry = by_spec.get(toks[1] + " " + toks[2])
                    fwd = switches.get(toks[5])
                    host, sep, port_s = toks[4].rpartition(":")
                    w = toks[7]
                    if entry is not None and fwd is not None and sep and is_uint(port_s) and is_uint(w) \
                            and v4(host) and int(port_s) <= 65535:
                        entry[1].append(new(RealServer, (host, int(port_s), fwd, int(w), None, None,
                                                         new(Location, (src, idx + 1)), line,
                                                         None, None, None, None, None, None, None, None)))
                        continue
                self._rule(idx, line, services, svc_keys, by_spec, proto_of, switches)
                continue
            if line[1:3] == "A " and line[0] == "-":
                toks = line.split()
                # The fast path of a plain service: "-A -t|-u ADDRESS:PORT -s SCHED".
                if len(toks) == 5 and toks[3] == "-s" and toks[4] in schedulers and toks[1] in fast_protos:
                    host, sep, port_s = toks[2].rpartition(":")
                    if sep and is_uint(port_s) and v4(host) and int(port_s) <= 65535:
                        proto = fast_protos[toks[1]]
                        key = (proto, host, int(port_s))
                        if key not in services:
                            entry = [[proto, host, int(port_s), None, toks[4], (), None, None, None,
                                      new(Location, (src, idx + 1)), line, None, None, False, None, 4, None, None], []]
                            services[key] = entry
                            spec = toks[1] + " " + toks[2]
                            svc_keys[spec] = key
                            by_spec[spec] = entry
                            continue
                self._rule(idx, line, services, svc_keys, by_spec, proto_of, switches)
                continue
            if line[0] == "-":
                self._rule(idx, line, services, svc_keys, by_spec, proto_of, switches)
                continue
            stripped = line.strip()
            if stripped[0] == "#":
                continue
            first = stripped.split(None, 1)[0]
            self.problem("error", idx, f"not an ipvsadm-save line: {first!r}",
                         "ipvsadm-save prints -A (virtual service) and -a (real server) rules, one a line", 1, len(first))
        self.check_last_line()
        return list(services.values()), "save", None

    def _rule(self, idx, line, services, svc_keys, by_spec, proto_of, switches) -> None:
        toks = line.split()
        cmd = toks[0]
        kind = "save_service" if cmd == "-A" else "save_dest"
        if cmd not in ("-A", "-a") or len(toks) < 3:
            if cmd not in ("-A", "-a"):
                self.problem("error", idx, f"{cmd} is not in ipvsadm-save output",
                             "ipvsadm-save prints -A (virtual service) and -a (real server) rules", 1, len(cmd))
            else:
                self.refuse(idx, kind, "default", "a rule is -A SERVICE [options] or -a SERVICE -r ADDRESS:PORT [options]")
            return
        g = self.g
        try:
            proto = proto_of.get(toks[1])
            if proto is None:
                raise _Cut
            spec = toks[1] + " " + toks[2]
            opts: dict[str, str | bool] = {}
            i = 3
            n = len(toks)
            while i < n:
                known = g.save_options.get(toks[i])
                if known is None:
                    raise _Cut
                name, arity, _ = known
                if arity:
                    if i + 1 >= n:
                        raise _Cut
                    opts[name] = toks[i + 1]
                else:
                    opts[name] = True
                i += 1 + arity
            family = 6 if opts.get("ipv6") else 4
            if proto == "FWM":
                addr = port = hname = pname = None
                fwmark = _int(toks[2])
            else:
                fwmark = None
                addr, port, hname, pname = self.endpoint(toks[2], proto.lower(), idx, 2)
                family = None if addr is None else (6 if ":" in addr else 4)
            key = ("FWM", fwmark, family) if proto == "FWM" else (proto, addr if addr is not None else hname, port if port is not None else pname)
            if cmd == "-A":
                vs = {"protocol": proto, "address": addr, "port": port, "fwmark": fwmark, "family": family,
                      "host_name": hname, "port_name": pname, "location": _new(Location, (self.source, idx + 1)),
                      "text": line, "real_servers": None, **_VS_DEFAULTS}
                sched = opts.get("scheduler")
                if not isinstance(sched, str):
                    raise _Cut
                vs["scheduler"] = sched
                if "persistent" in opts:
                    vs["persistent"] = _int(opts["persistent"])
                if "netmask" in opts:
                    vs["netmask"] = _prefix(opts["netmask"])
                if "pe" in opts:
                    vs["persistence_engine"] = opts["pe"]
                vs["one_packet"] = bool(opts.get("ops"))
                if "sched-flags" in opts:
                    vs["flags"] = tuple(str(opts["sched-flags"]).split(","))
                if key in services:
                    col, length = self.token_col(line, 2)
                    self.problem("error", idx, f"virtual service {toks[1]} {toks[2]} is added twice (first at line "
                                 f"{services[key][0][_VS_LOCATION].line})", "ipvsadm -R would refuse it: two dumps in one input?", col, length)
                    return
                services[key] = [[vs[f] for f in VirtualService._fields], []]
                if proto != "FWM" or family == 4:  # "-f 2" names the IPv4 service; the IPv6 one is "-f 2 -6"
                    svc_keys[spec] = key
                    by_spec[spec] = services[key]
                self.check_scheduler(vs, idx, line, self._tok_no(toks, "scheduler"))
                return
            entry = services.get(key)
            if entry is None and spec in self.refused:
                return
            if entry is None:
                col, length = self.token_col(line, 2)
                self.problem("error", idx, f"real server for {toks[1]} {toks[2]}, which no -A line before it adds",
                             "ipvsadm -R would refuse it; a grep of ipvsadm-save output? keep the -A lines", col, length)
                return
            target = opts.get("real-server")
            if not isinstance(target, str):
                raise _Cut
            r_addr, r_port, r_host, r_pname = self.endpoint(target, proto.lower() if proto != "FWM" else "fwm", idx,
                                                            self._tok_no(toks, "real-server"))
            fwd = next((g.save_forward[c] for c in ("masquerading", "gatewaying", "ipip") if opts.get(c)), "Route")
            weight = _int(opts["weight"]) if "weight" in opts else 1
            tunnel = None
            if "tun-type" in opts:
                flag = "-c" if opts.get("tun-nocsum") else "+c" if opts.get("tun-csum") else "r+c" if opts.get("tun-remcsum") else "-c"
                tunnel = {"ipip": "ipip", "gue": f"gue:{opts.get('tun-port', '?')}:{flag}", "gre": f"gre:{flag}"}.get(
                    str(opts["tun-type"]), str(opts["tun-type"]))
            entry[1].append(_new(RealServer, (
                r_addr, r_port, fwd, weight, None, None, _new(Location, (self.source, idx + 1)), line, None,
                _int(opts["u-threshold"]) if "u-threshold" in opts else None,
                _int(opts["l-threshold"]) if "l-threshold" in opts else None,
                tunnel, None, None, r_host, r_pname)))
        except _Cut:
            if cmd == "-A":
                self.refused.add(toks[1] + " " + toks[2])
            self.refuse(idx, kind, "default", "a rule is -A SERVICE -s SCHED [options] or -a SERVICE -r ADDRESS:PORT [options]")

    def _tok_no(self, toks: list[str], name: str) -> int:
        """The token number of the value of option ``name`` (for a diagnostic's column)."""
        for i, t in enumerate(toks):
            if self.g.save_options.get(t, ("",))[0] == name:
                return i + 1
        return 0


# ---------------------------------------------------------------- entry point

def parse_ipvsadm(text: str, source: str = "-", *, lenient: bool = False) -> IPVSTable:
    """Read ``ipvsadm -L[n]`` output (any column variant) or ``ipvsadm-save [-n]`` output; which one is
    told from the text. Problems are collected as diagnostics (``file:line:col``, the line, a hint);
    errors raise :class:`ParseError` unless ``lenient``, which keeps what could be read.

    >>> t = parse_ipvsadm("-A -u 10.96.0.10:53 -s rr\\n-a -u 10.96.0.10:53 -r 10.244.1.3:53 -m -w 1\\n", "save.txt")
    >>> vs = t.virtual("udp", "10.96.0.10", 53)
    >>> vs.scheduler, [(r.endpoint, r.forward, r.weight) for r in vs.real_servers], str(vs.real_servers[0].location)
    ('rr', [('10.244.1.3:53', 'Masq', 1)], 'save.txt:2')
    """
    # The model is ~200k small objects with no cycles: the cyclic GC would walk them again and again while
    # they are built (the 100k-real-server listing: 1.5 s -> 0.9 s).
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, source, lenient)
    finally:
        if enabled:
            gc.enable()


def _parse(text: str, source: str, lenient: bool) -> IPVSTable:
    # What a paste adds (prompts, fences, quote markers, elisions, other commands' output) is taken away
    # first; lines stay where they were, and diagnostics are put back at the original line:col.
    paste = clean_paste(text, source).only("ipvsadm")
    text = paste.text
    found = find_variant_paste(paste)
    kind = found[0] if found else None
    if kind is not None and kind not in ("ipvsadm-list", "ipvsadm-save"):
        raise ParseError([paste.line_map.restore(wrong_format(text, source, found, "ipvsadm output",
                                                               "kptrace reads `ipvsadm -Ln` listings and `ipvsadm-save -n` output here"))])
    reader = (_SaveReader if kind == "ipvsadm-save" else _ListingReader)(text, source, lenient)
    services, variant, version = reader.read()
    built = []
    seen: dict[tuple, int] = {}
    for fields, rs in services:
        fields[_VS_REAL_SERVERS] = tuple(rs)
        vs = _new(VirtualService, fields)
        # Names stand in for what was not resolved, so two unresolved services are not taken for one.
        key = (vs.protocol, vs.address or vs.host_name, vs.port if vs.port is not None else vs.port_name, vs.fwmark, vs.family)
        if key in seen and kind != "ipvsadm-save":
            reader.diags.append(Diagnostic("error", f"virtual service {vs.endpoint} ({vs.protocol}) is listed twice (first at line {seen[key]})",
                                           source, vs.location.line, 1, vs.text, len(vs.protocol),
                                           "two listings in one input? pass one per node"))
        seen.setdefault(key, vs.location.line)
        built.append(vs)
    notes = list(paste.notes) + _elision_notes(paste, reader.lines, built) + list(reader.notes)
    if reader.resolved_ports:
        shown = ", ".join(f"{n} = {p}" for n, p in list(reader.resolved_ports.items())[:10])
        more = f" and {len(reader.resolved_ports) - 10} more" if len(reader.resolved_ports) > 10 else ""
        notes.append(f"port names read with kptrace's table of /etc/services names (the node's may differ): {shown}{more}")
    if reader.unresolved_hosts:
        notes.append(_names_note("host name", "addresses", reader.unresolved_hosts))
    if reader.unresolved_ports:
        notes.append(_names_note("port name", "port numbers", reader.unresolved_ports))
    if not built and not any(d.severity == "error" for d in reader.diags):
        notes.append(f"{source}: no virtual services (an empty IPVS table)")
    if reader.cut:
        notes.append(f"{source}: the input was cut off in the middle of a line: a virtual service or real server "
                     "not in it is unknown, not absent")
    partial = reader.cut or reader.fragment or paste.partial
    table = IPVSTable(tuple(built), source, tuple(paste.line_map.restore_all(reader.diags)), tuple(notes), variant, version,
                      reader.numeric, partial)
    if not lenient and table.errors:
        raise ParseError(list(table.diagnostics))
    return table


def _elision_notes(paste: Paste, lines: list[str], services: list[VirtualService]) -> list[str]:
    """What each elided line may stand for: the real servers of the service above it, or the virtual
    services between the ones around it.

    >>> t = parse_ipvsadm("TCP  10.1.109.187:443 rr\\n  -> 10.0.0.1:6443  Masq 1 0 0\\n...\\n", "x")
    >>> t.notes[0]
    'x: the listing is elided at line 3: real servers of TCP 10.1.109.187:443 after line 2, and virtual services after it, may be missing'
    """
    out = []
    for n in paste.elisions:
        before = [vs for vs in services if vs.location.line < n]
        after = [vs for vs in services if vs.location.line > n]
        prev = f"{before[-1].protocol} {before[-1].endpoint}" if before else None
        nxt = f"{after[0].protocol} {after[0].endpoint}" if after else None
        following = next((l.split()[0] for l in lines[n:] if l.strip()), "")
        if following == "->":
            what = f"real servers of {prev}" if prev else "real servers, and the virtual service they belong to,"
        else:
            last = before[-1].real_servers[-1].location.line if before and before[-1].real_servers else 0
            own = f"real servers of {prev} after line {last}, and " if prev and last else ""
            if prev and nxt:
                what = f"{own}virtual services between {prev} and {nxt}"
            elif prev:
                what = f"{own}virtual services after {'it' if own else prev}"
            elif nxt:
                what = f"virtual services before {nxt}"
            else:
                what = "virtual services and real servers"
            what = what + "," if own else what
        out.append(f"{paste.source}: the listing is elided at line {n}: {what} may be missing")
    return out


def _names_note(what: str, into: str, names: dict[str, int]) -> str:
    shown = [f"{n} (line {line})" for n, line in list(names.items())[:10]]
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return (f"{len(names)} {what}{'s' if len(names) != 1 else ''} could not be turned into {into}: "
            f"{', '.join(shown)}{more}; take the listing with -n")
