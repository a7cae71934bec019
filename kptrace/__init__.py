"""kptrace: trace packets through kube-proxy data planes and check them against the Kubernetes API.

The library, for scripts and tests::

    >>> from kptrace import load_dumps, plan_packet, trace_packet
    >>> dp = load_dumps(["fixtures/samples/bootcamp.rules"], node_ips=["192.168.193.172"])   # doctest: +SKIP
    >>> trace = trace_packet(dp, plan_packet(dp, "10.106.224.41", 8080))                      # doctest: +SKIP

The layers, lowest first. A module imports its own package and lower ranks only, never a sibling of the same
rank; tests/test_layers.py holds the code to it (lazy imports inside functions count too)::

    0  errors             the exception tree and diagnostics
    1  model              small immutable values: rules, IPVS, nft, cluster, conntrack, kernel observations
    2  sources | parsers  raw text in (file, SSH, Kubernetes API) | syntax -> model values
    3  tracer             a packet through the netfilter hooks; kube-proxy's Service views
    4  load               sources + parsers -> one Dataplane
    5  checks             (dataplane, cluster state) -> findings
    6  render             views: text, JSON, iptables-save
    7  lab                the kernel-backed checker: the rules (written by render) in a network namespace,
                          the packets checks predicted, compared by checks.verify
    8  monitor            the long-running drift monitor that cli's ``monitor`` starts
    9  cli                one module per command: options -> one library call -> render

This package module is the lazy public facade above them all: it imports nothing until a name is asked for.
"""

__version__ = "0.1.0"

__all__ = [
    "Dataplane",
    "KptraceError",
    "Origin",
    "Packet",
    "Trace",
    "__version__",
    "load_dumps",
    "plan_packet",
    "service_views",
    "trace_packet",
]


def __getattr__(name: str):
    # Lazy: `kptrace --help` must not pay for the tracer's imports.
    if name in ("load_dumps",):
        from kptrace.load import load_dumps

        return load_dumps
    if name in ("plan_packet", "trace_packet"):
        from kptrace.tracer import defaults

        return getattr(defaults, name)
    if name == "service_views":
        from kptrace.tracer.services import service_views

        return service_views
    if name in ("Origin", "Packet"):
        from kptrace.tracer import packet

        return getattr(packet, name)
    if name == "Trace":
        from kptrace.tracer.result import Trace

        return Trace
    if name == "Dataplane":
        from kptrace.model.dataplane import Dataplane

        return Dataplane
    if name == "KptraceError":
        from kptrace.errors import KptraceError

        return KptraceError
    raise AttributeError(name)
