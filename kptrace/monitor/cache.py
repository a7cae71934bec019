"""The cluster state the monitor checks against: Services, EndpointSlices and Nodes as the API holds them,
updated by list and watch events, and told apart into changes that matter to kube-proxy and ones that
do not (a Node's heartbeat, an annotation)."""

from __future__ import annotations

import hashlib
import json
import threading

__all__ = ["RESOURCES", "ClusterCache"]

#: The resources kube-proxy programs from, in the order of ``kubectl get services,endpointslices,nodes``.
RESOURCES = ("services", "endpointslices", "nodes")

#: Metadata fields kube-proxy reads (the rest, managedFields and last-applied annotations above all, is
#: dropped on arrival: a real Node object is 10-50 kB, mostly images and conditions).
_META = ("name", "namespace", "labels", "ownerReferences", "deletionTimestamp")


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def slim(resource: str, obj: dict) -> dict:
    """What kube-proxy reads of an object: the rest is never stored (bounded memory at 5,000 nodes)."""
    meta = obj.get("metadata") or {}
    out = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    out["metadata"] = {k: meta[k] for k in _META if k in meta}
    status = obj.get("status") or {}
    if resource == "nodes":
        out["status"] = {"addresses": status.get("addresses") or []}
    elif status:
        out["status"] = status  # a Service's load-balancer ingress
    return out


def _digest(obj: dict) -> bytes:
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), digest_size=16).digest()


class ClusterCache:
    """Thread-safe: watch threads write, the check loop reads :meth:`state`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[tuple[str, str], tuple[bytes, dict]]] = {r: {} for r in RESOURCES}
        self.synced: set[str] = set()
        self.generation = 0  # bumped by every relevant change
        self._state = None
        self._state_generation = -1

    def replace(self, resource: str, items: list[dict]) -> bool:
        """A fresh list of ``resource``; True when it differs from what was held (a relevant change)."""
        new = {}
        for item in items:
            s = slim(resource, item)
            new[_key(s)] = (_digest(s), s)
        with self._lock:
            old = self._objects[resource]
            changed = resource not in self.synced or old.keys() != new.keys() or \
                any(old[k][0] != v[0] for k, v in new.items())
            self._objects[resource] = new
            self.synced.add(resource)
            if changed:
                self.generation += 1
        return changed

    def apply(self, resource: str, event_type: str, obj: dict) -> bool:
        """One watch event (ADDED, MODIFIED, DELETED); True when it changes what kube-proxy programs."""
        s = slim(resource, obj)
        key = _key(s)
        with self._lock:
            objects = self._objects[resource]
            if event_type == "DELETED":
                changed = objects.pop(key, None) is not None
            else:
                d = _digest(s)
                old = objects.get(key)
                changed = old is None or old[0] != d
                objects[key] = (d, s)
            if changed:
                self.generation += 1
        return changed

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {r: len(o) for r, o in self._objects.items()}

    def node_names(self) -> list[str]:
        with self._lock:
            return sorted(name for _, name in self._objects["nodes"])

    def state(self):
        """The cluster state as the drift check reads it (made again only after a relevant change)."""
        from kptrace.parsers.cluster_state import state_from_objects

        with self._lock:
            if self._state_generation == self.generation:
                return self._state
            generation = self.generation
            kinds = {"services": ("v1", "Service"), "endpointslices": ("discovery.k8s.io/v1", "EndpointSlice"), "nodes": ("v1", "Node")}
            items = [{"apiVersion": kinds[r][0], "kind": kinds[r][1], **o} for r in RESOURCES
                     for _, o in sorted(self._objects[r].values(), key=lambda v: _key(v[1]))]
        state = state_from_objects([{"apiVersion": "v1", "kind": "List", "items": items}], "the Kubernetes API")
        with self._lock:
            self._state, self._state_generation = state, generation
        return state
