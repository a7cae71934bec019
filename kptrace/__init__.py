"""kptrace: trace packets through kube-proxy data planes and check them against the Kubernetes API.

The library, for scripts and tests::

    >>> from kptrace import load_dumps, plan_packet, trace_packet
    >>> dp = load_dumps(["fixtures/samples/bootcamp.rules"], node_ips=["192.168.193.172"])   # doctest: +SKIP
    >>> trace = trace_packet(dp, plan_packet(dp, "10.106.224.41", 8080))                      # doctest: +SKIP
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
