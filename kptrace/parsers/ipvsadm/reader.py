"""What the ipvsadm listing reader and the ipvsadm-save reader share: the values both forms hold (endpoints,
with the host and port names a listing without ``-n`` prints; numbers with K/M/G/T; schedulers and their
flags; persistence netmasks) and the fields of a VirtualService while it is read."""

from __future__ import annotations

import re
from socket import AF_INET as _AF_INET
from socket import inet_pton as _inet_pton
from typing import Any

from kptrace.model.addr import is_uint
from kptrace.model.ipvs import VirtualService, canonical_address
from kptrace.parsers.ipvsadm.grammar import DOTTED_DIGITS, HOST, V4, diagnose_line, ipvsadm_grammar
from kptrace.parsers.linereader import Cut, LineReader

__all__ = ["VS_DEFAULTS", "VS_LOCATION", "VS_REAL_SERVERS", "VS_TEXT", "IpvsReader", "prefix_length", "uint", "v4_cached"]

_TOKEN = re.compile(r"\S+")
#: ipvsadm cuts an IPv4 ADDRESS:PORT printed with names to 28 characters (print_service_entry).
_CUT_AT = 28
VS_REAL_SERVERS = VirtualService._fields.index("real_servers")
VS_LOCATION = VirtualService._fields.index("location")
VS_TEXT = VirtualService._fields.index("text")
VS_DEFAULTS = {"scheduler": None, "flags": (), "persistent": None, "netmask": None, "one_packet": False,
               "persistence_engine": None, "stats": None, "rates": None}


def v4_cached(seen: set[str]):
    """Whether ``host`` is a canonical dotted quad (as ``V4``), remembering the addresses it took: a kube-proxy
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


def uint(tok: str) -> int:
    if not is_uint(tok):
        raise Cut
    return int(tok)


def prefix_length(mask: str) -> int:
    """A persistence netmask as a prefix length: ``255.255.255.0`` -> 24; IPv6 prints ``64`` already."""
    if is_uint(mask):
        if int(mask) > 128:
            raise Cut
        return int(mask)
    if not V4.fullmatch(mask):
        raise Cut
    value = int.from_bytes(bytes(int(p) for p in mask.split(".")), "big")
    plen = bin(value).count("1")
    if value != ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF):
        raise Cut  # a netmask with holes: IPVS takes it, but it has no prefix length
    return plen


class IpvsReader(LineReader):
    """One parse of ipvsadm output: the grammar, and the values both forms hold (endpoints with names,
    numbers with K/M/G/T, schedulers and their flags)."""

    MISFIT = "this line does not fit the listing here"
    CUT_HINT = "the listing looks cut off (an interrupted copy?); take it again, or pass --lenient to read what is there"
    LAST_LINE = ("this last line may be incomplete", "ipvsadm ends every line; check that the copy is whole")
    COMMENTS = True

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text, source)
        self.g = ipvsadm_grammar()
        self.unresolved_hosts: dict[str, int] = {}
        self.unresolved_ports: dict[str, int] = {}
        self.resolved_ports: dict[str, int] = {}
        self.numeric = True
        self.fragment = False  # a listing without its title lines
        self.multipliers = self.g.largenum

    def diagnosis(self, line: str, kind: str, variant: Any) -> tuple[int, int, str]:
        return diagnose_line(line, kind, variant)

    def read(self) -> tuple[list, str, str | None]:
        """The services read (each ``[VirtualService field values, real servers]``), the variant and the version."""
        raise NotImplementedError

    def token_col(self, line: str, n: int) -> tuple[int, int]:
        for i, m in enumerate(_TOKEN.finditer(line)):
            if i == n:
                return m.start() + 1, m.end() - m.start()
        return len(line) + 1, 1

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

    def largenum(self, tok: str) -> tuple[int, bool]:
        last = tok[-1:]
        if is_uint(last):
            return uint(tok), True
        mult = self.multipliers.get(last)
        if mult is None:
            raise Cut
        return uint(tok[:-1]) * mult, False

    def endpoint(self, tok: str, proto: str, idx: int, tok_no: int) -> tuple[str | None, int | None, str | None, str | None]:
        """``(address, port, host_name, port_name)`` of ``ADDRESS:PORT``; names are looked up or reported."""
        if tok[0] == "[":
            host, sep, rest = tok[1:].partition("]")
            if not sep or (rest and rest[0] != ":"):
                raise Cut
            port_s = rest[1:] if rest else None
            try:
                return self._port(canonical_address(host), port_s, None, proto, idx, tok_no, tok)
            except ValueError:
                raise Cut from None
        host, sep, port_s = tok.rpartition(":")
        if not sep:
            host, port_s = tok, None
        if V4.fullmatch(host):
            return self._port(host, port_s, None, proto, idx, tok_no, tok)
        if DOTTED_DIGITS.fullmatch(host) or not HOST.fullmatch(host):
            raise Cut  # 10.0.0.300, or not a name at all: the grammar says which
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
                raise Cut
            return addr, port, host, None
        if port_s is None or port_s == "":
            if host is None:
                raise Cut  # a numeric address without its port: not something ipvsadm prints
            return addr, None, host, None  # a host name cut before its port: already reported
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", port_s):
            raise Cut
        self.numeric = False
        named = self.g.port_names.get(proto.lower(), {}).get(port_s)
        if named is not None:
            self.resolved_ports.setdefault(f"{port_s}/{proto.lower()}", named)
        else:
            self.unresolved_ports.setdefault(port_s, idx + 1)
            col, length = self.token_col(self.lines[idx], tok_no)
            cut = len(tok) == _CUT_AT
            self.problem("warning", idx, f"port name {port_s!r} is not one kptrace knows ({proto.lower()})"
                         + (" (ipvsadm may have cut it at 28 characters)" if cut else ""),
                         "ipvsadm printed names from the node's /etc/services (taken without -n); take the "
                         "listing with -n to have port numbers", col + len(tok) - len(port_s), len(port_s))
        return addr, named, host, port_s
