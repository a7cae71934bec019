"""kube-proxy's names: Service port names and the chain names it derives from them by hashing.

>>> service_chain_hash("ns1/svc1:p80", "tcp")
'XPGD46QRK7WJZT7O'
>>> endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80")
'KUBE-SEP-SXIVWICOYRO3J4NJ'
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["SERVICE_CHAIN_PREFIXES", "chain_hash_of", "endpoint_chain", "service_chain_hash", "service_chains"]

#: Per-Service-port chains; all share one hash and differ only in the prefix.
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-XLB-")


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def service_chain_hash(spn: str, protocol: str) -> str:
    """The 16-character hash kube-proxy puts after KUBE-SVC-/SVL-/EXT-/FW-/XLB- (proxier.go)."""
    return _hash16(spn + protocol.lower())


def endpoint_chain(spn: str, protocol: str, endpoint: str) -> str:
    """``KUBE-SEP-`` + hash of the Service port name, protocol and ``ip:port`` (``[ipv6]:port``)."""
    return "KUBE-SEP-" + _hash16(spn + protocol.lower() + endpoint)


def service_chains(spn: str, protocol: str) -> tuple[str, ...]:
    h = service_chain_hash(spn, protocol)
    return tuple(p + h for p in SERVICE_CHAIN_PREFIXES)


def chain_hash_of(chain: str) -> str | None:
    """The hash part of a kube-proxy Service or endpoint chain name, or None for any other chain."""
    for p in (*SERVICE_CHAIN_PREFIXES, "KUBE-SEP-"):
        if chain.startswith(p):
            return chain[len(p):]
    return None
