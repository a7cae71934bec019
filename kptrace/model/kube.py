"""kube-proxy's names: Service port names and the chain names it derives from them by hashing.

>>> service_chain_hash("ns1/svc1:p80", "tcp")
'XPGD46QRK7WJZT7O'
>>> endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80")
'KUBE-SEP-SXIVWICOYRO3J4NJ'
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["ENTRY_POINT_KINDS", "SERVICE_CHAIN_PREFIXES", "chain_hash_of", "endpoint_chain", "entry_point_kind",
           "service_chain_hash"]

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


def chain_hash_of(chain: str) -> str | None:
    """The hash part of a kube-proxy Service or endpoint chain name, or None for any other chain."""
    for p in (*SERVICE_CHAIN_PREFIXES, "KUBE-SEP-"):
        if chain.startswith(p):
            return chain[len(p):]
    return None


#: What an entry rule (a jump from nat KUBE-SERVICES / KUBE-NODEPORTS into a Service's chains) can be.
#: "ExternalIP/LoadBalancerIP": a jump to KUBE-EXT-/KUBE-XLB- whose comment does not say which.
ENTRY_POINT_KINDS = ("ClusterIP", "ExternalIP", "LoadBalancerIP", "ExternalIP/LoadBalancerIP", "NodePort")


def entry_point_kind(chain: str, target: str, comment: str | None, dst: str | None) -> str | None:
    """Which entry point a jump into a Service's chains is: from the chain it sits in, its target, its comment
    and its ``-d`` address; None for the ``127.0.0.1`` NodePort twin of the rule after it.

    kube-proxy writes the comments ``"NS/SVC:PORT cluster IP"``, ``"... external IP"`` and ``"... loadbalancer
    IP"`` (the same words in every release since 1.2; the case is not trusted, hand-made rules vary):

    >>> entry_point_kind("KUBE-SERVICES", "KUBE-SVC-X", "ns/web:http cluster IP", "10.96.0.10")
    'ClusterIP'
    >>> entry_point_kind("KUBE-SERVICES", "KUBE-EXT-X", "ns/web:http external IP", "192.0.2.7")
    'ExternalIP'
    >>> entry_point_kind("KUBE-SERVICES", "KUBE-EXT-X", "ns/web:http LoadBalancer IP", "198.51.100.1")
    'LoadBalancerIP'
    >>> entry_point_kind("KUBE-NODEPORTS", "KUBE-EXT-X", "ns/web:http", None)
    'NodePort'
    >>> entry_point_kind("KUBE-NODEPORTS", "KUBE-SVC-X", "ns/web:http", "127.0.0.0/8") is None
    True
    """
    if chain == "KUBE-NODEPORTS":
        return None if dst is not None and dst.startswith("127.") else "NodePort"
    said = (comment or "").lower()
    if target.startswith("KUBE-FW-") or "loadbalancer ip" in said:
        return "LoadBalancerIP"
    if "external ip" in said:
        return "ExternalIP"
    if target.startswith(("KUBE-EXT-", "KUBE-XLB-")):
        return "ExternalIP/LoadBalancerIP"
    return "ClusterIP"
