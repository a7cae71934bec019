"""Where the node's routes send a packet, and the address MASQUERADE gives it there (``ip -j route`` and
``ip -j addr`` of a bundle)."""

from __future__ import annotations

from kptrace.model.addr import Cidr, format_addr, parse_addr, parse_cidr

__all__ = ["Routing", "route_table"]


class Routing:
    """One family's routes and interface addresses."""

    def __init__(self, family: int, routes: tuple[dict, ...], interfaces: dict[str, list[str]]) -> None:
        self.family = family
        self._routes = route_table(routes, family)
        self._interfaces = {dev: [parse_cidr(a) for a in addrs if parse_cidr(a).version == family]
                            for dev, addrs in interfaces.items()}

    def egress_address(self, dst: int) -> tuple[str, str] | None:
        """The address MASQUERADE gives a packet to ``dst``: that of the interface the node's routes send it
        out of, in the next hop's subnet when it has one there (the kernel's inet_select_addr), else its first.
        None without routes (no bundle)."""
        best = None
        for cidr, dev, gateway in self._routes:
            if cidr.contains(dst) and (best is None or cidr.prefixlen > best[0].prefixlen):
                best = (cidr, dev, gateway)
        if best is None:
            return None
        _, dev, gateway = best
        addrs = self._interfaces.get(dev) or []
        if not addrs:
            return None
        hop = gateway if gateway is not None else dst
        chosen = next((a for a in addrs if a.contains(hop)), addrs[0])
        # the interface address itself, not its network: kept as the host part of the "addr/len" we read
        return dev, format_addr(self.family, chosen.host_address)


def route_table(routes: tuple[dict, ...], family: int) -> list[tuple[Cidr, str, int | None]]:
    """``ip -j route`` entries of one family as (destination, device, gateway)."""
    table = []
    for r in routes:
        dst = r.get("dst", "")
        dev = r.get("dev")
        if not dev or r.get("type") in ("blackhole", "unreachable", "prohibit"):
            continue
        try:
            cidr = parse_cidr(("0.0.0.0/0" if family == 4 else "::/0") if dst == "default" else dst)
        except ValueError:
            continue
        if cidr.version != family:
            continue
        gw = r.get("gateway")
        try:
            gateway = parse_addr(gw)[1] if gw else None
        except ValueError:
            gateway = None
        table.append((cidr, dev, gateway))
    return table
