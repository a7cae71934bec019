"""Small model values: addresses, kube-proxy's chain-name hashes, kernel probabilities."""

from __future__ import annotations

import ipaddress
import random
from fractions import Fraction

import pytest

from kptrace.model.addr import parse_addr, parse_cidr
from kptrace.model.kube import endpoint_chain, service_chain_hash
from kptrace.tracer.matchers import kernel_probability


def test_fast_ipv4_parsing_agrees_with_ipaddress():
    rng = random.Random(7)
    for _ in range(2000):
        addr = ".".join(str(rng.choice([0, 1, 9, 10, 99, 127, 255, rng.randrange(256)])) for _ in range(4))
        plen = rng.randrange(33)
        text = f"{addr}/{plen}" if rng.random() < 0.7 else addr
        n = ipaddress.ip_network(text, strict=False)
        c = parse_cidr(text)
        assert (c.version, c.network, c.prefixlen) == (4, int(n.network_address), n.prefixlen), text
        assert parse_addr(addr) == (4, int(ipaddress.ip_address(addr)))


@pytest.mark.parametrize("bad", ["10.0.0.300/8", "1.2.3", "1.2.3.4/33", "01.2.3.4", "a.b.c.d", "1.2.3.4/x", ""])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(ValueError):
        parse_cidr(bad)


@pytest.mark.parametrize("spn,proto,expected", [
    ("ns1/svc1:p80", "tcp", "XPGD46QRK7WJZT7O"),           # kube-proxy.md 3.1
    ("ns1/svc1", "tcp", "AQI2S6QIMU7PVVRP"),               # unnamed port
    ("yaobank/summary:http", "tcp", "OIQIZJVJK6E34BR4"),   # seed 000
    ("default/kubernetes-bootcamp-v1:", "tcp", "RPP7DHNHMGOIIFDC"),  # seed 001, old "ns/name:" form
])
def test_service_chain_hash(spn, proto, expected):
    assert service_chain_hash(spn, proto) == expected


def test_endpoint_chain_hash():
    assert endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert endpoint_chain("yaobank/customer:http", "tcp", "198.19.22.129:80") == "KUBE-SEP-5ACZIZ6RUWUYDTM3"  # seed 000


@pytest.mark.parametrize("n", range(1, 21))
def test_kube_proxy_probabilities_give_equal_shares_within_kernel_precision(n):
    # kube-proxy writes 1/(n-i) with %0.10f; the kernel keeps lround(p * 2^31) / 2^31.
    remaining = Fraction(1)
    shares = []
    for i in range(n - 1):
        p = kernel_probability(f"{1 / (n - i):0.10f}")
        shares.append(remaining * p)
        remaining *= 1 - p
    shares.append(remaining)
    assert sum(shares) == 1
    assert all(abs(float(s) - 1 / n) < 1e-8 for s in shares)
