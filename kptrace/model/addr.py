"""Addresses and CIDRs as integers, parsed once; ``1.2.3.4`` and ``1.2.3.4/32`` are the same network.

>>> parse_cidr("10.0.0.0/8").contains(parse_addr("10.1.2.3")[1])
True
>>> parse_cidr("1.2.3.4") == parse_cidr("1.2.3.4/32")
True
>>> format_addr(6, parse_addr("2001:db8::1")[1])
'2001:db8::1'
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

__all__ = [
    "Cidr", "format_addr", "format_endpoint", "is_uint", "parse_addr", "parse_cidr", "parse_endpoint"]


@dataclass(frozen=True, slots=True)
class Cidr:
    version: int
    network: int
    mask: int
    prefixlen: int
    host_address: int = 0  # the address as written ("10.0.0.5/24" -> 10.0.0.5), for interface addresses

    def contains(self, addr: int) -> bool:
        return (addr & self.mask) == self.network

    @property
    def is_host(self) -> bool:
        return self.prefixlen == (32 if self.version == 4 else 128)

    def __str__(self) -> str:
        return f"{format_addr(self.version, self.network)}/{self.prefixlen}"

    def host(self, offset: int) -> int:
        """An address inside the network, ``offset`` from its start (negative: from its end)."""
        size = 1 << ((32 if self.version == 4 else 128) - self.prefixlen)
        return self.network + (offset % size)



def is_uint(text: str) -> bool:
    """Whether ``text`` is a whole number in ASCII digits: ``str.isdigit()`` also takes '³' and '٣', which
    ``int()`` refuses or reads as other digits (found by the hypothesis suite).

    >>> is_uint("8080"), is_uint("³0"), is_uint("")
    (True, False, False)
    """
    return text.isascii() and text.isdigit()

def _ipv4(text: str) -> int | None:
    # ipaddress takes ~15 us an address; a trace into a new Service reads ~20 of them, and this ~1 us.
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for p in parts:
        if not is_uint(p) or len(p) > 3 or (len(p) > 1 and p[0] == "0"):
            return None
        o = int(p)
        if o > 255:
            return None
        value = (value << 8) | o
    return value


_V4_MASKS = [(0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for n in range(33)]


@functools.lru_cache(maxsize=65536)
def parse_cidr(text: str) -> Cidr:
    """Raises ValueError for a malformed network; host bits are dropped as the kernel does."""
    host, sep, plen = text.partition("/")
    v4 = _ipv4(host)
    if v4 is not None and (not sep or (is_uint(plen) and int(plen) <= 32)):
        n = int(plen) if sep else 32
        return Cidr(4, v4 & _V4_MASKS[n], _V4_MASKS[n], n, v4)
    net = ipaddress.ip_network(text, strict=False)
    bits = net.max_prefixlen
    mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
    return Cidr(net.version, int(net.network_address), mask, net.prefixlen, int(ipaddress.ip_address(host.strip("[]"))))


@functools.lru_cache(maxsize=65536)
def parse_addr(text: str) -> tuple[int, int]:
    """``(version, integer)``; raises ValueError."""
    v4 = _ipv4(text)
    if v4 is not None:
        return 4, v4
    a = ipaddress.ip_address(text.strip("[]"))
    return a.version, int(a)


@functools.lru_cache(maxsize=65536)
def format_addr(version: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def format_endpoint(version: int, addr: int, port: int | None) -> str:
    a = format_addr(version, addr)
    if port is None:
        return a
    return f"{a}:{port}" if version == 4 else f"[{a}]:{port}"


def parse_endpoint(text: str) -> tuple[int, int, int | None]:
    """``IP[:PORT]`` or ``[IPv6]:PORT`` (or a bare IPv6 address) -> (version, addr, port or None).

    >>> parse_endpoint("10.106.224.41:8080")[2]
    8080
    >>> parse_endpoint("[2001:db8::1]:80")[0]
    6
    """
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = _port(rest[1:]) if rest.startswith(":") and rest[1:] else None
        v, a = parse_addr(host)
        return v, a, port
    if text.count(":") == 1:
        host, port_s = text.split(":")
        v, a = parse_addr(host)
        return v, a, _port(port_s)
    v, a = parse_addr(text)
    return v, a, None


def _port(text: str) -> int:
    """A port as written: ASCII digits (a minus sign kept, so that -1 is said to be out of range); not int()'s
    "+80", "8_0", " 80" or other scripts' digits."""
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise ValueError(f"{text!r} is not a port number")
    return int(text)
