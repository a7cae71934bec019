"""Check option values by type: what iptables itself refuses, kptrace refuses too.

The types are named in ``grammars/iptables.toml`` (``types = { "--probability" = "probability" }``);
:func:`check_value` says what is wrong with a value, or None. ``iptables-restore`` rejects each of these
(``statistic: bad value for option "--probability", or out of range (0-1)``), so a dump holding one was
not taken from a node: it was edited, or cut, and kptrace says where rather than trace a guess.

>>> check_value("probability", "0.5"), check_value("probability", "inf")
(None, "'inf' is not a probability between 0 and 1")
>>> print(check_value("nat-range", "10.244.1.3:99999"))
port 99999 is out of range (0-65535)
>>> print(check_value("mark", "0xZZ/0xffffffff"))
'0xZZ' is not a mark (a number up to 0xffffffff)
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re

from kptrace.model.addr import is_uint

__all__ = ["HINTS", "check_value"]

_PORT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*$")  # a service name (`iptables -L` without -n); names.toml resolves it


def _port(text: str, *, names: bool = True) -> str | None:
    if is_uint(text):
        return None if int(text) <= 65535 else f"port {int(text)} is out of range (0-65535)"
    if names and _PORT_NAME.match(text):
        return None
    return f"{text!r} is not a port"


def _port_range(value: str, sep: str = ":") -> str | None:
    if not value:
        return "a port is missing"
    lo, s, hi = value.partition(sep)
    for part in (lo, hi) if s else (lo,):
        if part:
            problem = _port(part)
            if problem:
                return problem
    if s and is_uint(lo) and is_uint(hi) and int(lo) > int(hi):
        return f"the range {value} runs backwards"
    return None


def _address(value: str) -> str | None:
    """An address, a network, or (as iptables takes it) a network with a dotted mask: 10.0.0.0/255.0.0.0."""
    try:
        ipaddress.ip_network(value, strict=False)  # (takes dotted masks too)
        return None
    except ValueError:
        return f"{value!r} is not an address or network"


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _nat_range(value: str) -> str | None:
    """``ADDR[-ADDR][:PORT[-PORT]]``, ``[V6ADDR]:PORT``, ``:PORT`` (DNAT/SNAT --to-*)."""
    if not value:
        return "the address is missing"
    ports: str | None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            return f"{value!r} is not ADDR[:PORT]"
        ports = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 address (range), no port
        host, ports = value, None
    else:
        host, colon, ports = value.partition(":")
        ports = ports if colon else None
    if host:
        for a in host.split("-", 1):
            if not _ip(a):
                return f"{a!r} is not an address"
    if ports is not None:
        if not ports:
            return "the port after ':' is missing"
        return _port_range(ports, "-")
    return None


def _mark(value: str) -> str | None:
    for part in value.split("/", 1):
        try:
            n = int(part, 0)
        except ValueError:
            return f"{part!r} is not a mark (a number up to 0xffffffff)"
        if not 0 <= n <= 0xFFFFFFFF:
            return f"{part} is out of range for a mark (0-0xffffffff)"
    return None


def _probability(value: str) -> str | None:
    try:
        p = float(value)
    except ValueError:
        p = math.nan
    if not (0.0 <= p <= 1.0):  # also nan and inf, which float() takes
        return f"{value!r} is not a probability between 0 and 1"
    return None


def _count(value: str, least: int) -> str | None:
    if not is_uint(value) or int(value) < least or int(value) > 0xFFFFFFFF:
        return f"{value!r} is not a whole number{' of at least 1' if least else ''}"
    return None


def _port_list(value: str) -> str | None:
    items = value.split(",")
    if len(items) > 15:
        return f"{len(items)} ports: multiport takes at most 15"
    for item in items:
        problem = _port_range(item)
        if problem:
            return problem
    return None


@functools.cache
def _protocol_names() -> frozenset[str]:
    """The protocol names iptables takes (its own, then /etc/protocols': grammars/names.toml), and ``all``."""
    from kptrace.parsers.grammar import names_table

    return frozenset(names_table()["protocols"]["names"]) | {"all"}


def _protocol(value: str) -> str | None:
    """``-p``: a name iptables knows or a number it has a name for (``-p 300`` is refused as unknown too)."""
    if value.lower() in _protocol_names() or (is_uint(value) and int(value) <= 255):
        return None
    return f"unknown protocol {value!r}"


def _interface(value: str) -> str | None:
    """``-i`` / ``-o``: a name shorter than IFNAMSIZ (16, its NUL included), a ``+`` ending it a wildcard."""
    if len(value) > 15:
        return f"interface name {value!r} must be shorter than IFNAMSIZ (15 characters at most)"
    return None


_CHECKS = {
    "protocol": _protocol,
    "interface": _interface,
    "address": _address,
    "port-range": _port_range,
    "port-range-dash": lambda v: _port_range(v, "-"),
    "port-list": _port_list,
    "nat-range": _nat_range,
    "mark": _mark,
    "probability": _probability,
    "statistic-mode": lambda v: None if v in ("random", "nth") else f"{v!r} is not a statistic mode (random or nth)",
    "count": lambda v: _count(v, 0),
    "positive": lambda v: _count(v, 1),
}

#: what to tell the user, per type
HINTS = {
    "protocol": "iptables takes tcp, udp, sctp, icmp, ... (the names of /etc/protocols), all, or a number it has a name for",
    "interface": "Linux interface names are 15 characters at most (eth0, cali1234567890a, veth+)",
    "address": "addresses are written 10.0.0.1, 10.0.0.0/8 or 2001:db8::/32",
    "port-range": "ports are 0-65535, a range as 30000:32767",
    "port-range-dash": "ports are 0-65535, a range as 1024-65535",
    "port-list": "up to 15 ports or ranges, separated by commas: 80,443,8000:8080",
    "nat-range": "iptables writes 10.244.1.3:8080, [fd00::3]:8080 or 10.0.0.1-10.0.0.9",
    "mark": "a mark is VALUE or VALUE/MASK, each up to 0xffffffff: 0x4000/0x4000",
    "probability": "iptables refuses a probability outside 0-1 (statistic: bad value ... out of range (0-1)); was the dump edited?",
    "statistic-mode": "-m statistic --mode random --probability P, or --mode nth --every N",
    "count": "a whole number, 0 or more",
    "positive": "a whole number, 1 or more",
}


def check_value(kind: str, value: str) -> str | None:
    """What is wrong with ``value`` as a ``kind``, or None (an unknown kind checks nothing)."""
    check = _CHECKS.get(kind)
    return check(value) if check is not None else None
