"""The values a listing prints (ports, protocols, addresses, names, flags) turned into what iptables-save
writes, by the type the grammar data gives each value."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from kptrace.model.addr import is_uint
from kptrace.parsers.listing.grammar import ListingGrammar, save_string
from kptrace.parsers.listing.structure import ANY_ADDRESS, V4_HOST

if TYPE_CHECKING:
    from kptrace.parsers.listing.translate import Listing

__all__ = ["CONVERTERS", "Values", "Where"]

#: where a value is, for a diagnostic: (0-based line, column, length), or a function that works it out
#: (only a value that cannot be read needs it)
Where = tuple[int, int, int] | Callable[[], tuple[int, int, int]]


class Values:
    """Turns the values a listing prints into what iptables-save writes: ports, protocols, addresses,
    names. What the tables cannot resolve is reported once per name and kept as written."""

    def __init__(self, g: ListingGrammar, listing: "Listing") -> None:
        self.g = g
        self.listing = listing

    def port(self, value: str, where: Where) -> str:
        if is_uint(value):
            return value
        port = self.g.services.get(value)
        if isinstance(port, int):
            self.listing.resolved(value, str(port))
            return str(port)
        if port is None:
            self.listing.unresolved(value, where, f"service name {value!r} is not in kptrace's table of well-known ports",
                                    "kept as written: a rule that needs it is assumed not to match; list with -n to see the number")
        else:
            self.listing.unresolved(value, where, f"service name {value!r} stands for ports {', '.join(map(str, port))}",
                                    "kept as written: a rule that needs it is assumed not to match; list with -n to see the number")
        return value

    def ports(self, value: str, where: Where) -> str:
        if is_uint(value.replace(",", "").replace(":", "")):
            return value
        return ",".join(":".join(self.port(p, where) for p in part.split(":")) for part in value.split(","))

    def address(self, value: str, where: Where, *, host_suffix: bool) -> str:
        """An address column or value: ``10.0.0.1`` -> ``10.0.0.1/32`` (``host_suffix``), names resolved."""
        family = self.listing.family
        host, sep, plen = value.partition("/")
        if V4_HOST.match(host) or (":" in host and family == 6):
            if sep or not host_suffix:
                return value
            return f"{value}/{32 if ':' not in host else 128}"
        known = self.g.addresses.get(host)
        if known is not None:
            net_addr, _, net_plen = known["network"].partition("/")
            if sep and is_uint(plen) and int(plen) <= int(net_plen):
                read = f"{net_addr}/{plen}"
                self.listing.resolved(value, read)
                return read
            if not sep and known.get("host") is None and (net_plen in ("32", "128")):
                read = f"{net_addr}/{net_plen}" if host_suffix else net_addr
                self.listing.resolved(value, read)
                return read
            if known.get("host") is not None:
                read = known["host"] + (f"/{plen}" if sep else ("/32" if host_suffix else ""))
                self.listing.unresolved(value, where, f"{host!r} names several addresses ({known['network']}); read as {known['host']}",
                                        "take the listing with -n to be sure", keep=False, name=host)
                self.listing.resolved(value, read)
                return read
        self.listing.unresolved(value, where, f"host name {host!r} cannot be turned into an address from the listing",
                                "kept as written: rules that need it are assumed not to match; take the listing with -n", name=host)
        return value

    def protocol(self, value: str, where: Where) -> str:
        if is_uint(value):
            return self.g.protocol_save.get(int(value), value)
        num = self.g.protocol_names.get(value.lower())
        if num is None:
            self.listing.unresolved(value, where, f"protocol {value!r} is not in kptrace's table of protocols",
                                    "kept as written: rules that need it are assumed not to match; take the listing with -n")
            return value
        return self.g.protocol_save.get(num, str(num))

    def convert(self, typ: str, value: str, where: Where) -> str | None:
        """The iptables-save text of a value of type ``typ``; None leaves the option out (a default)."""
        f = CONVERTERS.get(typ)
        return value if f is None else f(self, value, where)


def _tcpflags(v: Values, value: str, where) -> str:
    if not value.startswith("0x"):
        return value
    bits = int(value, 16)
    names = []
    for name, bit in (("FIN", 1), ("SYN", 2), ("RST", 4), ("PSH", 8), ("ACK", 16), ("URG", 32)):
        if bits & bit:
            names.append(name)
    return ",".join(names) or "NONE"


def _icmp(v: Values, value: str, where) -> str:
    table = v.g.icmp[v.listing.family]
    found = table.get(value)
    if found is None:
        v.listing.unresolved(value, where, f"ICMP type {value!r} is not in kptrace's table", "kept as written")
        return value
    return found


def _user(v: Values, value: str, where) -> str:
    if is_uint(value):
        return value
    if value == "root":  # uid and gid 0 on every node; other names are the node's own
        v.listing.resolved(value, "0")
        return "0"
    v.listing.unresolved(value, where, f"user or group name {value!r} is the node's own: kptrace cannot turn it into an id",
                         "kept as written; take the listing with -n")
    return value


_LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "error": 3, "warn": 4, "warning": 4, "notice": 5, "info": 6, "debug": 7}
# XT_LOG_TCPSEQ, XT_LOG_TCPOPT, XT_LOG_IPOPT, XT_LOG_UID, XT_LOG_MACDECODE (0x10 was XT_LOG_NFLOG)
_LOG_FLAGS = ((1, "--log-tcp-sequence"), (2, "--log-tcp-options"), (4, "--log-ip-options"), (8, "--log-uid"), (32, "--log-macdecode"))

CONVERTERS: dict[str, Callable[[Values, str, Any], str | None]] = {
    "port": Values.port,
    "ports": Values.ports,
    "addr": lambda v, value, where: v.address(value, where, host_suffix=False) if value not in ANY_ADDRESS else value,
    "proto": lambda v, value, where: value if is_uint(value) else str(v.g.protocol_names.get(value.lower(), value)),
    "protoname": lambda v, value, where: v.protocol(value, where),
    "str": lambda v, value, where: save_string(value[1:-1]),
    "comment": lambda v, value, where: save_string(value),
    "tcpflags": _tcpflags,
    "icmp": _icmp,
    "icmptype": lambda v, value, where: "any" if value == "255" else value,
    "user": _user,
    "int": lambda v, value, where: value,
    "hlmode": lambda v, value, where: value.replace("-", ","),
    "burst": lambda v, value, where: None if value == "5" else value,
    "loglevel": lambda v, value, where: (lambda n: None if n == 4 else str(n))(int(value) if is_uint(value) else _LOG_LEVELS.get(value, -1)),
    "logflags": lambda v, value, where: " ".join(opt for bit, opt in _LOG_FLAGS if int(value) & bit) or None,
    "classid": lambda v, value, where: ":".join(f"{int(x, 16):04x}" for x in value.split(":")),
}
