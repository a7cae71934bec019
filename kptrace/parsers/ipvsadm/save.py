"""``ipvsadm-save [-n]`` (``ipvsadm -S``): -A and -a rules, in the order ipvsadm prints them.

A plain service (``-A -t|-u ADDRESS:PORT -s SCHED``) and a plain real server (``-a ... -r ADDRESS:PORT -m -w W``)
take a fast path in the read loop; every other rule is read option by option."""

from __future__ import annotations

from kptrace.model.addr import is_uint
from kptrace.model.ipvs import Location, RealServer, VirtualService
from kptrace.parsers.ipvsadm.reader import VS_DEFAULTS, VS_LOCATION, IpvsReader, prefix_length, uint, v4_cached
from kptrace.parsers.linereader import Cut

__all__ = ["SaveReader"]

_new = tuple.__new__  # NamedTuple's own __new__ is a Python function: a tenth of a line's cost
_RULE_HINT = "a rule is -A SERVICE -s SCHED [options] or -a SERVICE -r ADDRESS:PORT [options]"


class SaveReader(IpvsReader):
    """``ipvsadm-save [-n]`` (``ipvsadm -S``): -A and -a rules, in the order ipvsadm prints them."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text, source)
        g = self.g
        self.services: dict[tuple, list] = {}
        self.svc_keys: dict[str, tuple] = {}  # a service spec as written ("-t 10.0.0.1:80") -> its key
        self.by_spec: dict[str, list] = {}  # ... -> its [fields, real servers]
        self.proto_of = {opt: proto for proto, opts in g.protocols.items() for opt in opts}
        self.switches = {o: g.save_forward[c] for o, (c, _, _) in g.save_options.items() if c in g.save_forward}
        self.refused: set[str] = set()  # services whose -A line was refused: their -a lines are not reported again

    def read(self) -> tuple[list, str, str | None]:
        g = self.g
        services = self.services
        svc_keys = self.svc_keys
        by_spec = self.by_spec
        switches = self.switches
        fast_protos = {"-t": "TCP", "-u": "UDP"}
        schedulers = g.schedulers
        src = self.source
        new = _new
        v4 = v4_cached(set())
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
                self._rule(idx, line)
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
                self._rule(idx, line)
                continue
            if line[0] == "-":
                self._rule(idx, line)
                continue
            stripped = line.strip()
            if stripped[0] == "#":
                continue
            first = stripped.split(None, 1)[0]
            self.problem("error", idx, f"not an ipvsadm-save line: {first!r}",
                         "ipvsadm-save prints -A (virtual service) and -a (real server) rules, one a line", 1, len(first))
        self.check_last_line()
        return list(services.values()), "save", None

    def _rule(self, idx: int, line: str) -> None:
        """A rule the fast paths did not take, read option by option (a value that does not fit: the grammar says why)."""
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
        try:
            proto = self.proto_of.get(toks[1])
            if proto is None:
                raise Cut
            opts = self._options(toks)
            family: int | None = 6 if opts.get("ipv6") else 4
            if proto == "FWM":
                addr = port = hname = pname = None
                fwmark = uint(toks[2])
            else:
                fwmark = None
                addr, port, hname, pname = self.endpoint(toks[2], proto.lower(), idx, 2)
                family = None if addr is None else (6 if ":" in addr else 4)
            key = ("FWM", fwmark, family) if proto == "FWM" else (proto, addr if addr is not None else hname, port if port is not None else pname)
            if cmd == "-A":
                vs = {"protocol": proto, "address": addr, "port": port, "fwmark": fwmark, "family": family,
                      "host_name": hname, "port_name": pname, "location": _new(Location, (self.source, idx + 1)),
                      "text": line, "real_servers": None, **VS_DEFAULTS}
                self._add_service(idx, line, toks, key, vs, opts)
            else:
                self._add_real_server(idx, line, toks, key, proto, opts)
        except Cut:
            if cmd == "-A":
                self.refused.add(toks[1] + " " + toks[2])
            self.refuse(idx, kind, "default", _RULE_HINT)

    def _options(self, toks: list[str]) -> dict[str, str | bool]:
        """A rule's options after its service, by their canonical names (a flag: True)."""
        opts: dict[str, str | bool] = {}
        options = self.g.save_options
        i = 3
        n = len(toks)
        while i < n:
            known = options.get(toks[i])
            if known is None:
                raise Cut
            name, arity, _ = known
            if arity:
                if i + 1 >= n:
                    raise Cut
                opts[name] = toks[i + 1]
            else:
                opts[name] = True
            i += 1 + arity
        return opts

    def _add_service(self, idx: int, line: str, toks: list[str], key: tuple, vs: dict, opts: dict[str, str | bool]) -> None:
        """``-A``: a virtual service, with its scheduler, persistence and flags."""
        sched = opts.get("scheduler")
        if not isinstance(sched, str):
            raise Cut
        vs["scheduler"] = sched
        if "persistent" in opts:
            vs["persistent"] = uint(str(opts["persistent"]))
        if "netmask" in opts:
            vs["netmask"] = prefix_length(str(opts["netmask"]))
        if "pe" in opts:
            vs["persistence_engine"] = opts["pe"]
        vs["one_packet"] = bool(opts.get("ops"))
        if "sched-flags" in opts:
            vs["flags"] = tuple(str(opts["sched-flags"]).split(","))
        services = self.services
        if key in services:
            col, length = self.token_col(line, 2)
            self.problem("error", idx, f"virtual service {toks[1]} {toks[2]} is added twice (first at line "
                         f"{services[key][0][VS_LOCATION].line})", "ipvsadm -R would refuse it: two dumps in one input?", col, length)
            return
        services[key] = [[vs[f] for f in VirtualService._fields], []]
        if vs["protocol"] != "FWM" or vs["family"] == 4:  # "-f 2" names the IPv4 service; the IPv6 one is "-f 2 -6"
            spec = toks[1] + " " + toks[2]
            self.svc_keys[spec] = key
            self.by_spec[spec] = services[key]
        self.check_scheduler(vs, idx, line, self._tok_no(toks, "scheduler"))

    def _add_real_server(self, idx: int, line: str, toks: list[str], key: tuple, proto: str, opts: dict[str, str | bool]) -> None:
        """``-a``: a real server of a service an -A line before it added."""
        entry = self.services.get(key)
        if entry is None:
            if toks[1] + " " + toks[2] not in self.refused:
                col, length = self.token_col(line, 2)
                self.problem("error", idx, f"real server for {toks[1]} {toks[2]}, which no -A line before it adds",
                             "ipvsadm -R would refuse it; a grep of ipvsadm-save output? keep the -A lines", col, length)
            return
        target = opts.get("real-server")
        if not isinstance(target, str):
            raise Cut
        r_addr, r_port, r_host, r_pname = self.endpoint(target, proto.lower() if proto != "FWM" else "fwm", idx,
                                                        self._tok_no(toks, "real-server"))
        fwd = next((self.g.save_forward[c] for c in ("masquerading", "gatewaying", "ipip") if opts.get(c)), "Route")
        weight = uint(str(opts["weight"])) if "weight" in opts else 1
        tunnel = None
        if "tun-type" in opts:
            flag = "-c" if opts.get("tun-nocsum") else "+c" if opts.get("tun-csum") else "r+c" if opts.get("tun-remcsum") else "-c"
            tunnel = {"ipip": "ipip", "gue": f"gue:{opts.get('tun-port', '?')}:{flag}", "gre": f"gre:{flag}"}.get(
                str(opts["tun-type"]), str(opts["tun-type"]))
        entry[1].append(_new(RealServer, (
            r_addr, r_port, fwd, weight, None, None, _new(Location, (self.source, idx + 1)), line, None,
            uint(str(opts["u-threshold"])) if "u-threshold" in opts else None,
            uint(str(opts["l-threshold"])) if "l-threshold" in opts else None,
            tunnel, None, None, r_host, r_pname)))

    def _tok_no(self, toks: list[str], name: str) -> int:
        """The token number of the value of option ``name`` (for a diagnostic's column)."""
        for i, t in enumerate(toks):
            if self.g.save_options.get(t, ("",))[0] == name:
                return i + 1
        return 0
