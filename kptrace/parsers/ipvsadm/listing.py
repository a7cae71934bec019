"""``ipvsadm -L[n]`` in any column variant (plain, ``--stats``, ``--rate``, ``--persistent-conn``,
``--thresholds``, ``--tun-info``); a fragment without title lines is read by the columns it shows.

The real server lines (~85% of a big listing) and plain virtual service lines take a fast path in the read
loop; every other line goes to the method of its first word."""

from __future__ import annotations

import re
from typing import Any

from kptrace.errors import Diagnostic, ParseError
from kptrace.model.addr import is_uint
from kptrace.model.ipvs import Location, Rates, RealServer, Stats, VirtualService
from kptrace.parsers.ipvsadm.grammar import Plan, Variant, plan_of
from kptrace.parsers.ipvsadm.reader import VS_DEFAULTS, VS_TEXT, IpvsReader, prefix_length, uint, v4_cached
from kptrace.parsers.linereader import Cut

__all__ = ["ListingReader"]

_new = tuple.__new__  # NamedTuple's own __new__ is a Python function: a tenth of a line's cost
_SERVICE_WORDS = frozenset(("TCP", "UDP", "SCTP", "FWM"))
_LARGENUM = re.compile(r"\d+[KMGT]?")
_PROTO_NAMES = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
_VARIANTS_HINT = ("kptrace reads ipvsadm -L with no column option, or with --stats, --rate, --persistent-conn, "
                  "--thresholds or --tun-info")
_NO_PLAN = Plan(-1, (), (), (), (), ())


class ListingReader(IpvsReader):
    """``ipvsadm -L[n]`` in any column variant; a fragment without title lines is read by the columns it shows."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text, source)
        self.variant: Variant | None = None
        self.candidates: list[Variant] | None = None  # the title's first line seen, its second not yet
        self.version: str | None = None
        self.services: list = []  # [VirtualService field values, real servers]
        self.current_rs: list | None = None  # the real servers of the last virtual service
        self.proto = "tcp"
        self.header_seen = False
        self.plan = _NO_PLAN

    def read(self) -> tuple[list, str, str | None]:
        # The loop keeps what its fast paths read in locals (an attribute load per line was a tenth of the
        # line's cost) and takes them again after a line of another kind, which may change them.
        src = self.source
        services = self.services
        forwards = self.g.forwards
        schedulers = self.g.schedulers
        endpoint = self.endpoint
        dest = self._dest
        new = _new
        v4 = v4_cached(set())
        slow = self.slow_line
        current_rs, variant, proto, plan = self.current_rs, self.variant, self.proto, self.plan
        n_tokens, p_ints, p_forwards, plain = plan.n_tokens, plan.ints, plan.forwards, plan.plain
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
                        vals: list[Any] = [host, int(port_s), None, None, None, None, new(Location, (src, idx + 1)), line,
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
                    except (Cut, ValueError):
                        pass
            elif c0 in "TUS" and variant is not None and variant.service is None:
                # The fast path of a virtual service line: "TCP  10.96.0.10:53 rr" (a plain one: no flags, persistence).
                toks = line.split()
                if len(toks) == 3 and toks[0] in _PROTO_NAMES and toks[2] in schedulers:
                    host, sep, port_s = toks[1].rpartition(":")
                    if sep and is_uint(port_s) and v4(host) and int(port_s) <= 65535:
                        current_rs = self.current_rs = []
                        services.append([[toks[0], host, int(port_s), None, toks[2], (), None, None, None,
                                          new(Location, (src, idx + 1)), line, None, None, False, None, 4, None, None],
                                         current_rs])
                        proto = self.proto = _PROTO_NAMES[toks[0]]
                        continue
            slow(idx, line)
            current_rs, variant, proto, plan = self.current_rs, self.variant, self.proto, self.plan
            n_tokens, p_ints, p_forwards, plain = plan.n_tokens, plan.ints, plan.forwards, plan.plain
        return self.finish()

    def use_variant(self, variant: Variant) -> None:
        self.variant, self.candidates = variant, None
        self.plan = plan_of(variant.dest)

    def slow_line(self, idx: int, line: str) -> None:
        """A line the fast paths did not take, by its first word."""
        stripped = line.strip()
        if not stripped:
            return
        first = stripped.split(None, 1)[0]
        if first in _SERVICE_WORDS:
            self.service_line(idx, line, stripped)
        elif first == "->":
            self.arrow_line(idx, line, stripped)
        elif first == "IP" and stripped.startswith("IP Virtual Server version"):
            self.version_line(idx, stripped)
        elif first == "Prot":
            self.title_line(idx, line, stripped)
        elif first[0] != "#":
            self.other_line(idx, line, stripped, first)

    def service_line(self, idx: int, line: str, stripped: str) -> None:
        """A virtual service (``TCP|UDP|SCTP ADDRESS:PORT ...`` or ``FWM MARK ...``): its real servers follow."""
        if self.variant is None and self.candidates is None:
            candidates = self._candidates_from_service(idx, stripped)
            if len(candidates) == 1:
                self.use_variant(candidates[0])
            else:
                self.candidates = candidates
        pool = self.candidates
        vs = self._service(idx, line, self.variant or (pool[0] if pool else self.g.variants["default"]))
        if vs is None:
            self.current_rs = None
            return
        self.current_rs = []
        self.services.append([vs, self.current_rs])
        self.proto = vs[0].lower() if vs[0] != "FWM" else "fwm"

    def arrow_line(self, idx: int, line: str, stripped: str) -> None:
        """``-> RemoteAddress:Port ...`` (the second title line) or a real server the fast path did not take."""
        toks = stripped.split()
        if len(toks) > 1 and toks[1] == "RemoteAddress:Port":
            words = tuple(toks[2:])
            pool = self.candidates if self.candidates is not None else list(self.g.variants.values())
            match = [v for v in pool if v.dest_title == words]
            if not match:
                col, length = self.token_col(line, 2)
                self.problem("error", idx, f"unknown column titles {' '.join(words)!r}", _VARIANTS_HINT, col, length)
                match = pool[:1]
            self.use_variant(match[0])
            self.header_seen = True
            return
        if self.current_rs is None:
            if not self.services:
                self.problem("error", idx, "a real server line before any virtual service",
                             "real servers (  -> ...) follow the virtual service they belong to", 1, 2)
            return  # else: its virtual service was refused, and that was reported
        if self.variant is None:
            self.use_variant(self._pick(idx, line, toks, self.candidates))
        assert self.variant is not None
        try:
            if len(toks) != self.plan.n_tokens:
                raise Cut
            self.current_rs.append(self._dest(toks, self.plan, *self.endpoint(toks[1], self.proto, idx, 1),
                                              _new(Location, (self.source, idx + 1)), line))
        except (Cut, ValueError):
            self.refuse(idx, "dest", self.variant.name, "a real server line is  -> ADDRESS:PORT and the listing's columns")

    def version_line(self, idx: int, stripped: str) -> None:
        """``IP Virtual Server version X.Y.Z (size=N)``: a listing starts."""
        m = re.fullmatch(r"IP Virtual Server version (\d+(?:\.\d+)*) \(size=(\d+)\)", stripped)
        if m is None:
            self.refuse(idx, "version", "default", "a listing starts with IP Virtual Server version X.Y.Z (size=N)")
        elif self.version is not None or self.services:
            self.problem("error", idx, "a second listing starts here", "pass one listing per input", 1, 2)
        else:
            self.version = m.group(1)
        self.header_seen = True

    def title_line(self, idx: int, line: str, stripped: str) -> None:
        """``Prot LocalAddress:Port ...``: the variants its words fit (the second title line settles it)."""
        toks = stripped.split()
        if len(toks) < 2 or toks[1] != "LocalAddress:Port":
            self.refuse(idx, "title", "default", "the title line is Prot LocalAddress:Port ...")
            return
        words = tuple(toks[2:])
        candidates = [v for v in self.g.variants.values() if v.title == words]
        if not candidates:
            col, length = self.token_col(line, 2)
            self.problem("error", idx, f"unknown column titles {' '.join(words)!r}", _VARIANTS_HINT, col, length)
            candidates = [self.g.variants["default"]]
        self.variant, self.candidates = None, candidates
        self.header_seen = True

    def other_line(self, idx: int, line: str, stripped: str, first: str) -> None:
        """No line of a listing: another of ipvsadm's outputs is refused whole; anything else is an error."""
        src = self.source
        if stripped.startswith(("IPVS connection entries", "pro expire state")):
            raise ParseError([Diagnostic("error", "this is ipvsadm's connection table (ipvsadm -Lnc), not its virtual services",
                                         src, idx + 1, 1, line, len(first), "take `ipvsadm -Ln` (or `ipvsadm-save -n`) on the node")])
        if stripped.startswith("Timeout (tcp tcpfin udp)"):
            raise ParseError([Diagnostic("error", "this is `ipvsadm -L --timeout` output, not the virtual services",
                                         src, idx + 1, 1, line, len(first), "take `ipvsadm -Ln` on the node")])
        if first in ("-A", "-a"):
            self.problem("error", idx, "an ipvsadm-save rule inside a listing", "pass a listing and saved rules as separate inputs", 1, 2)
            return
        self.problem("error", idx, f"not a line of an ipvsadm listing: {first!r}",
                     "a listing has title lines, virtual services (TCP|UDP|SCTP|FWM ...) and real servers (  -> ...); "
                     "a shell prompt or a note pasted in?", 1, len(first))

    def finish(self) -> tuple[list, str, str | None]:
        """The last line checked; a listing without title lines is a fragment, and its notes say so."""
        self.check_last_line()
        g = self.g
        services = self.services
        variant = (self.variant or (self.candidates or [g.variants["default"]])[0]).name
        self.fragment = not self.header_seen and bool(services)
        if self.fragment:
            self.notes.append(f"{self.source}: no header: read as `ipvsadm -L{'n' if self.numeric else ''}` output"
                              f" ({variant} columns); a fragment: a virtual service not in it is unknown, not absent")
            fields, real_servers = services[-1]
            if not real_servers:
                self.notes.append(f"{self.source}: no real servers are shown for {' '.join(fields[VS_TEXT].split()[:2])}, the "
                                  "fragment's last virtual service: they may be missing, not absent")
        return services, variant, self.version

    def _candidates_from_service(self, idx: int, stripped: str) -> list[Variant]:
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

    def _pick(self, idx: int, line: str, toks: list[str], candidates: list[Variant] | None) -> Variant:
        """The first real server line of a listing whose variant the titles did not settle: the one its columns fit."""
        pool = candidates or [self.g.variants["default"]]
        fits = [v for v in pool if self._fits(v, toks)]
        if len(fits) > 1:
            self.problem("error", idx, f"no title line, and these columns fit {' and '.join('--' + v.name for v in fits)}: read as --{fits[0].name}",
                         "keep the listing's title lines (Prot LocalAddress:Port ...)", 1, 2)
        return (fits or pool)[0]

    def _fits(self, v: Variant, toks: list[str]) -> bool:
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

    def _dest(self, toks: list[str], plan: Plan, addr, port, hname, pname, loc: Location, line: str) -> RealServer:
        """A real server line's columns, read by the variant's plan (a value that does not fit: Cut)."""
        vals = [addr, port, None, None, None, None, loc, line, None, None, None, None, None, None, hname, pname]
        for ti, fi in plan.ints:
            t = toks[ti]
            if not is_uint(t):
                raise Cut
            vals[fi] = int(t)  # ValueError for a non-ASCII digit: the caller takes it as Cut
        for ti, fi in plan.forwards:
            t = toks[ti]
            if t not in self.g.forwards:
                raise Cut
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
                v = uint(t)
            vals.append(v)
        return _new(kind, (*vals, exact))

    def _service(self, idx: int, line: str, variant: Variant) -> list | None:
        """A virtual service line read slowly (flags, persistence, names, numbers): its VirtualService field values."""
        toks = line.split()
        try:
            if len(toks) < 3:
                raise Cut
            if toks[0] == "FWM":
                fwmark = uint(toks[1])
                family: int | None = 6 if toks[2] == "IPv6" else 4
                rest_at = 3 if family == 6 else 2
                addr = port = hname = pname = None
            else:
                fwmark = None
                addr, port, hname, pname = self.endpoint(toks[1], toks[0].lower(), idx, 1)
                family = None if addr is None else (6 if ":" in addr else 4)
                rest_at = 2
            vs: dict[str, Any] = {"protocol": toks[0], "address": addr, "port": port, "fwmark": fwmark, "family": family,
                  "host_name": hname, "port_name": pname, "location": _new(Location, (self.source, idx + 1)),
                  "text": line, "real_servers": None, **VS_DEFAULTS}
            rest = toks[rest_at:]
            if variant.service is None:
                self._scheduler_part(rest, vs)
                self.check_scheduler(vs, idx, line, rest_at)
            else:
                if len(rest) != len(variant.service):
                    raise Cut
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
        except Cut:
            self.refuse(idx, "service", variant.name, "a virtual service line is PROTO ADDRESS:PORT and its scheduler "
                        "(FWM MARK [IPv6] for a firewall-mark service)")
            return None

    @staticmethod
    def _scheduler_part(rest: list[str], vs: dict) -> None:
        """``SCHED [(FLAGS)] [persistent T [mask M] [pe NAME]] [ops]`` (print_service_entry's order)."""
        n = len(rest)
        if not n or not re.fullmatch(r"[a-z][a-z0-9]*", rest[0]):
            raise Cut
        vs["scheduler"] = rest[0]
        i = 1
        if i < n and rest[i][0] == "(":
            if rest[i][-1] != ")" or len(rest[i]) < 3:
                raise Cut
            vs["flags"] = tuple(rest[i][1:-1].split(","))
            i += 1
        if i < n and rest[i] == "persistent":
            if i + 1 >= n:
                raise Cut
            vs["persistent"] = uint(rest[i + 1])
            i += 2
            if i + 1 < n and rest[i] == "mask":
                vs["netmask"] = prefix_length(rest[i + 1])
                i += 2
            if i + 1 < n and rest[i] == "pe":
                vs["persistence_engine"] = rest[i + 1]
                i += 2
        if i < n and rest[i] == "ops":
            vs["one_packet"] = True
            i += 1
        if i != n:
            raise Cut
