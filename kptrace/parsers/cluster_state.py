"""Cluster state from Kubernetes JSON or YAML: what ``kubectl get services,endpointslices,nodes -A -o
json`` prints (a v1 ``List``), the typed lists (``ServiceList`` ...), single objects, multi-document
YAML, and the live API's list bodies. Only the fields kube-proxy reads are kept. Text pasted with a prompt
(``$ kubectl get svc,endpointslices,nodes -A -o json``), in a code fence or with CRLF line ends is read too
(kptrace/parsers/paste.py). An item without a field kube-proxy needs is refused at its place in the file:
``c.json:12:5: item 3 (kind Service): metadata.name is missing``.

>>> st = parse_cluster_state('{"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "s", "namespace": "n"},'
...                          ' "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}]}', "c.json")
>>> st.services[0].cluster_ips, st.services[0].ports[0].protocol
(('10.0.0.1',), 'TCP')
"""

from __future__ import annotations

import gc
import json
import re
from typing import Any

from kptrace.errors import Diagnostic, InputError, ParseError
from kptrace.model.addr import is_uint
from kptrace.model.cluster import ClusterState, EndpointPort, EndpointSlice, Node, Service, ServicePort, SliceEndpoint
from kptrace.parsers.paste import PasteMap, clean_paste

__all__ = ["COMMAND", "HINT", "parse_cluster_state", "state_from_objects"]

#: What prints a cluster state, for hints (a missing, binary or empty --cluster-state file's as well).
COMMAND = "kubectl get services,endpointslices,nodes -A -o json"
HINT = f"give what `{COMMAND}` prints (or -o yaml)"

_KINDS = ("Service", "EndpointSlice", "Node")
_EMPTY: dict = {}


def parse_cluster_state(text: str, source: str) -> ClusterState:
    """Parse JSON (anything starting with ``{`` or ``[``) or YAML; errors say file:line:col."""
    # A large cluster is ~1M small objects, all kept: the cyclic GC finds nothing to free and its passes
    # cost ~40% of the parse (benchmarks/run.py, the "kptrace drift, 10k Services" row).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse(text, source)
    finally:
        if enabled:
            gc.enable()


def _parse(text: str, source: str) -> ClusterState:
    paste = clean_paste(text, source)
    text = paste.text
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{source}: empty cluster state", hint=HINT)
    if stripped[0] in "{[":
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError as e:
            lines = text.split("\n")
            line_text = lines[e.lineno - 1] if e.lineno - 1 < len(lines) else ""
            raise ParseError([paste.line_map.restore(Diagnostic(
                "error", f"not valid JSON: {e.msg}", source, e.lineno, e.colno, line_text, 1,
                hint=f"the file should be what `{COMMAND}` prints"))]) from None
        except RecursionError:
            raise InputError(f"{source}: the JSON nests too deep to be a cluster state", hint=HINT) from None
    else:
        docs = _yaml_docs(text, source, paste.line_map)
    return state_from_objects(docs, source, text=text, line_map=paste.line_map)


def _yaml_docs(text: str, source: str, line_map: PasteMap | None = None) -> list[Any]:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with the kubernetes client
        raise InputError(f"{source}: reading YAML needs PyYAML", hint="pip install pyyaml, or give JSON (-o json)") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        col = mark.column + 1 if mark else 0
        lines = text.splitlines()
        quoted = lines[line - 1] if 0 < line <= len(lines) else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        d = Diagnostic("error", f"not valid YAML: {problem}", source, line, col, quoted, 1,
                       hint="the file should be what `kubectl get services,endpointslices,nodes -A -o yaml` prints")
        raise ParseError([line_map.restore(d) if line_map else d]) from None
    except RecursionError:
        raise InputError(f"{source}: the YAML nests too deep to be a cluster state", hint=HINT) from None


class _Bad(Exception):
    """A field kube-proxy needs is missing or of the wrong type: ``field`` is its path in the item."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def state_from_objects(docs: list[Any], source: str, *, text: str | None = None,
                       line_map: PasteMap | None = None) -> ClusterState:
    """Build the state from decoded documents: Lists (nested too) and single objects. ``text`` (what they
    were decoded from) lets an error name the line of the item it is about.

    >>> state_from_objects([{"kind": "List", "items": [{"kind": "Node", "metadata": {"name": "n1"}},
    ...                     {"kind": "Service", "metadata": {"namespace": "x"}, "spec": {}}]}], "c.json")
    Traceback (most recent call last):
    kptrace.errors.ParseError: c.json: item 2 (kind Service): metadata.name is missing
    """
    services: list[Service] = []
    slices: list[EndpointSlice] = []
    nodes: list[Node] = []
    other: dict[str, int] = {}
    versions = []

    def fail(path: list, message: str, field: str = "") -> None:
        line, col, quoted = _locate(text, path, docs, _field_path(field)) if text is not None else (0, 0, "")
        d = Diagnostic("error", message, source, line, col, quoted, 1,
                       "compare it with what `kubectl get services,endpointslices,nodes -A -o json` prints; kptrace "
                       "reads the v1 and discovery.k8s.io/v1 fields kube-proxy reads")
        raise ParseError([line_map.restore(d) if line_map else d])

    on_path: set[int] = set()  # YAML anchors can make a list that holds itself
    documents = len(docs) > 1

    def describe(path: list) -> str:
        return _describe(path, documents)

    def walk(obj: Any, path: list) -> None:
        if len(path) > 64 or id(obj) in on_path:
            fail(path[:2], "lists nest deeper than a cluster state's (or hold themselves)")
        if isinstance(obj, list):
            on_path.add(id(obj))
            for i, o in enumerate(obj):
                walk(o, path + [i])
            on_path.discard(id(obj))
            return
        if not isinstance(obj, dict):
            fail(path, f"{describe(path) or 'the top level'} is not a Kubernetes object ({_kind_of_value(obj)}, not a mapping)")
        kind = obj.get("kind") or ""
        if not isinstance(kind, str):
            fail(path, f"{describe(path) or 'the object'}: kind is not a string")
        if "items" in obj and (kind.endswith("List") or not kind):
            rv = (obj.get("metadata") or {}).get("kptrace/resourceVersions") if isinstance(obj.get("metadata"), dict) else None
            if isinstance(rv, dict):
                versions.extend(sorted(rv.items()))
            items = obj.get("items") or []
            if not isinstance(items, list):
                fail(path + ["items"], f"{describe(path) or 'the list'}: items is not a list")
            item_kind = kind[:-4] if kind.endswith("List") and kind != "List" else ""
            on_path.add(id(obj))
            for i, item in enumerate(items):
                if item_kind and isinstance(item, dict) and not item.get("kind"):
                    item = {**item, "kind": item_kind}
                walk(item, path + ["items", i])
            on_path.discard(id(obj))
            return
        where = f"{source} {_path_text(path)}".rstrip()
        try:
            if kind == "Service":
                services.append(_service(obj, where))
            elif kind == "EndpointSlice":
                slices.append(_slice(obj, where))
            elif kind == "Node":
                nodes.append(_node(obj))
            else:
                other[kind or "(no kind)"] = other.get(kind or "(no kind)", 0) + 1
        except _Bad as e:
            fail(path, f"{describe(path) or 'the object'} (kind {kind}{_name_of(obj)}): {e.field} {e.problem}", e.field)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            fail(path, f"{describe(path) or 'the object'} (kind {kind}{_name_of(obj)}): a field is not of the type "
                       "Kubernetes gives it")

    walk(docs[0] if len(docs) == 1 else docs, [])
    if not services and not slices and not nodes:
        found = ", ".join(f"{n} {k}" for k, n in sorted(other.items())) or "nothing"
        raise InputError(f"{source}: no Services, EndpointSlices or Nodes in it (found {found})", hint=HINT)
    return ClusterState(tuple(services), tuple(slices), tuple(nodes), source, tuple(versions))


def _name_of(obj: dict) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f" {name!r}" if isinstance(name, str) and name else ""


def _path_text(path: list) -> str:
    """``items[2].items[0]``, as the Service's location has always said it."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _kind_of_value(v: Any) -> str:
    return {"str": "a string", "int": "a number", "float": "a number", "bool": "true or false", "NoneType": "null",
            "list": "a list"}.get(type(v).__name__, type(v).__name__)


def _describe(path: list, documents: bool = False) -> str:
    """``item 3``, ``item 2 of document 1``: where an object is, counted from 1."""
    parts = []
    i = 0
    while i < len(path):
        if path[i] == "items" and i + 1 < len(path) and isinstance(path[i + 1], int):
            parts.append(f"item {path[i + 1] + 1}")
            i += 2
        elif isinstance(path[i], int):
            parts.append(f"document {path[i] + 1}" if i == 0 and documents else f"element {path[i] + 1}")
            i += 1
        else:
            parts.append(str(path[i]))
            i += 1
    return " of ".join(reversed(parts))


def _field_path(field: str) -> list:
    """``spec.ports[0].port`` -> ``["spec", "ports", 0, "port"]``."""
    out: list = []
    for name, index, key in re.findall(r"([^.\[\]]+)|\[(\d+)\]|\[([^\]]+)\]", field):
        out.append(name or (int(index) if index else key))
    return out


def _locate(text: str, path: list, docs: list, field: list | tuple = ()) -> tuple[int, int, str]:
    """``(line, col, the line)`` of the value at ``path`` + ``field`` in ``text``, or of as much of that path as
    is there (a missing field: its object); (0, 0, "") if it cannot tell."""
    pos = None
    for k in range(len(field), -1, -1):
        try:
            if text.lstrip()[:1] in "{[":
                pos = _json_position(text, path + list(field[:k]))
            else:
                pos = _yaml_position(text, (path if len(docs) > 1 else [0] + path) + list(field[:k]))
        except Exception:  # noqa: BLE001 - a position is a help, never a second error
            pos = None
        if pos is not None:
            break
    if pos is None:
        return 0, 0, ""
    line = text.count("\n", 0, pos) + 1
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return line, pos - start + 1, text[start:end if end >= 0 else len(text)]


def _json_position(text: str, path: list) -> int | None:
    """The offset where the value at ``path`` starts: the siblings before it are skipped with the decoder."""
    decoder = json.JSONDecoder()
    pos = _past_ws(text, 0)
    for step in path:
        opener = text[pos]
        pos = _past_ws(text, pos + 1)
        if isinstance(step, int):
            if opener != "[":
                return None
            for _ in range(step):
                _, pos = decoder.raw_decode(text, pos)
                pos = _past_ws(text, _past_ws(text, pos) + 1)  # past the comma
        else:
            if opener != "{":
                return None
            while True:
                key, pos = decoder.raw_decode(text, pos)
                pos = _past_ws(text, _past_ws(text, pos) + 1)  # past the colon
                if key == step:
                    break
                _, pos = decoder.raw_decode(text, pos)
                pos = _past_ws(text, _past_ws(text, pos) + 1)
    return pos


_WS = re.compile(r"[ \t\n\r]*")


def _past_ws(text: str, pos: int) -> int:
    """The offset of the first character at or after ``pos`` that is not JSON white space."""
    m = _WS.match(text, pos)
    return m.end() if m is not None else pos


def _yaml_position(text: str, path: list) -> int | None:
    import yaml

    nodes = [n for n in yaml.compose_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if n is not None]
    node: Any = nodes
    for step in path:
        if isinstance(node, list):
            node = node[step]
        elif isinstance(node, yaml.SequenceNode):
            node = node.value[step]
        elif isinstance(node, yaml.MappingNode):
            node = next(v for k, v in node.value if k.value == step)
        else:
            return None
    return node.start_mark.index if hasattr(node, "start_mark") else None


def _ip(text: str) -> str:
    """IPv6 in its canonical form (as iptables-save prints it and kube-proxy's net.IP.String() writes it)."""
    if ":" not in text:
        return text
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text


def _pairs(d: dict | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (d or {}).items()))


def _map(v: Any, field: str) -> dict:
    if v is None:
        return _EMPTY
    if not isinstance(v, dict):
        raise _Bad(field, f"is not a mapping ({_kind_of_value(v)})")
    return v


def _list(v: Any, field: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Bad(field, f"is not a list ({_kind_of_value(v)})")
    return v


def _num(v: Any, field: str, default: int | None = 0) -> int:
    """A number as Kubernetes writes one (an int; kubectl never quotes them, but a hand-written YAML may)."""
    if v is None:
        if default is None:
            raise _Bad(field, "is missing")
        return default
    if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, str) and not is_uint(v)):
        raise _Bad(field, f"is not a number ({v!r})")
    return int(v)


def _str(v: Any, field: str, default: str | None = "") -> str:
    if v is None or v == "":
        if default is None:
            raise _Bad(field, "is missing")
        return default
    if not isinstance(v, str):
        raise _Bad(field, f"is not a string ({v!r})")
    return v


def _strings(v: Any, field: str) -> tuple[str, ...]:
    out = _list(v, field)
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise _Bad(f"{field}[{i}]", f"is not a string ({x!r})")
    return tuple(out)


def _service(obj: dict, where: str) -> Service:
    meta = _map(obj.get("metadata"), "metadata")
    spec = _map(obj.get("spec"), "spec")
    status = _map(obj.get("status"), "status")
    name = _str(meta.get("name"), "metadata.name", None)
    ips = _strings(spec.get("clusterIPs"), "spec.clusterIPs") or ((_str(spec.get("clusterIP"), "spec.clusterIP"),)
                                                                  if spec.get("clusterIP") else ())
    cluster_ips = tuple(_ip(a) for a in ips)
    ports = []
    for i, p in enumerate(_list(spec.get("ports"), "spec.ports")):
        p = _map(p, f"spec.ports[{i}]")
        ports.append(ServicePort(_str(p.get("name"), f"spec.ports[{i}].name"), _str(p.get("protocol"), f"spec.ports[{i}].protocol", "TCP").upper(),
                                 _num(p.get("port"), f"spec.ports[{i}].port", None), str(p.get("targetPort", "")),
                                 _num(p.get("nodePort"), f"spec.ports[{i}].nodePort")))
    lb_ips: list[str] = []
    proxy_ips: list[str] = []
    for i, ing in enumerate(_list(_map(status.get("loadBalancer"), "status.loadBalancer").get("ingress"), "status.loadBalancer.ingress")):
        ing = _map(ing, f"status.loadBalancer.ingress[{i}]")
        ip = _str(ing.get("ip"), f"status.loadBalancer.ingress[{i}].ip")
        if ip:
            (proxy_ips if ing.get("ipMode") == "Proxy" else lb_ips).append(_ip(ip))
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = _map(_map(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig").get("clientIP"),
                   "spec.sessionAffinityConfig.clientIP")
        affinity = _num(cfg.get("timeoutSeconds"), "spec.sessionAffinityConfig.clientIP.timeoutSeconds") or 10800
    return Service(
        namespace=_str(meta.get("namespace"), "metadata.namespace", "default"), name=name,
        type=_str(spec.get("type"), "spec.type", "ClusterIP"), cluster_ips=cluster_ips, ports=tuple(ports),
        external_ips=tuple(_ip(a) for a in _strings(spec.get("externalIPs"), "spec.externalIPs")),
        lb_ips=tuple(lb_ips), lb_proxy_ips=tuple(proxy_ips),
        source_ranges=_strings(spec.get("loadBalancerSourceRanges"), "spec.loadBalancerSourceRanges"),
        external_policy=_str(spec.get("externalTrafficPolicy"), "spec.externalTrafficPolicy", "Cluster"),
        internal_policy=_str(spec.get("internalTrafficPolicy"), "spec.internalTrafficPolicy", "Cluster"),
        health_check_node_port=_num(spec.get("healthCheckNodePort"), "spec.healthCheckNodePort"), affinity_timeout=affinity,
        labels=_pairs(_map(meta.get("labels"), "metadata.labels")),
        annotations=_pairs(_map(meta.get("annotations"), "metadata.annotations")), has_selector=bool(spec.get("selector")),
        traffic_distribution=_str(spec.get("trafficDistribution"), "spec.trafficDistribution"), location=where,
    )


def _slice(obj: dict, where: str) -> EndpointSlice:
    meta = _map(obj.get("metadata"), "metadata")
    labels = _map(meta.get("labels"), "metadata.labels")
    ports = []
    for i, p in enumerate(_list(obj.get("ports"), "ports")):
        p = _map(p, f"ports[{i}]")
        name = p.get("name")
        ports.append(EndpointPort(name if isinstance(name, str) else None, _str(p.get("protocol"), f"ports[{i}].protocol", "TCP").upper(),
                                  _num(p.get("port"), f"ports[{i}].port") if p.get("port") is not None else None))
    eps = []
    for i, e in enumerate(_list(obj.get("endpoints"), "endpoints")):
        e = _map(e, f"endpoints[{i}]")
        cond = _map(e.get("conditions"), f"endpoints[{i}].conditions")
        hints = _map(e.get("hints"), f"endpoints[{i}].hints")
        zh = tuple(_str(_map(z, f"endpoints[{i}].hints.forZones[{j}]").get("name"), f"endpoints[{i}].hints.forZones[{j}].name", None)
                   for j, z in enumerate(_list(hints.get("forZones"), f"endpoints[{i}].hints.forZones")))
        nh = tuple(_str(_map(n, f"endpoints[{i}].hints.forNodes[{j}]").get("name"), f"endpoints[{i}].hints.forNodes[{j}].name", None)
                   for j, n in enumerate(_list(hints.get("forNodes"), f"endpoints[{i}].hints.forNodes")))
        addrs = _strings(e.get("addresses"), f"endpoints[{i}].addresses")
        eps.append(SliceEndpoint(tuple(_ip(a) for a in addrs) if addrs and ":" in addrs[0] else addrs, cond.get("ready"),
                                 cond.get("serving"), cond.get("terminating"), e.get("nodeName"), e.get("zone"), zh, nh))
    return EndpointSlice(_str(meta.get("namespace"), "metadata.namespace", "default"), _str(meta.get("name"), "metadata.name"),
                         _str(labels.get("kubernetes.io/service-name"), "metadata.labels[kubernetes.io/service-name]"),
                         _str(obj.get("addressType"), "addressType", "IPv4"), tuple(ports), tuple(eps), _pairs(labels), where)


def _node(obj: dict) -> Node:
    meta = _map(obj.get("metadata"), "metadata")
    spec = _map(obj.get("spec"), "spec")
    status = _map(obj.get("status"), "status")
    addrs = tuple((_str(a.get("type"), f"status.addresses[{i}].type"), _str(a.get("address"), f"status.addresses[{i}].address"))
                  for i, a in enumerate(_map(a, f"status.addresses[{i}]") for i, a in enumerate(_list(status.get("addresses"), "status.addresses"))))
    cidrs = _strings(spec.get("podCIDRs"), "spec.podCIDRs") or ((_str(spec.get("podCIDR"), "spec.podCIDR"),) if spec.get("podCIDR") else ())
    return Node(_str(meta.get("name"), "metadata.name", None), _pairs(_map(meta.get("labels"), "metadata.labels")), addrs, cidrs)
