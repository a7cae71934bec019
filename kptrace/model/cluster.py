"""The cluster as the Kubernetes API describes it: Services, EndpointSlices and Nodes, as small frozen
values holding only what kube-proxy reads. Built by :mod:`kptrace.parsers.cluster_state` from
``kubectl get services,endpointslices,nodes -A -o json`` output or the live API's lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["ClusterState", "EndpointPort", "EndpointSlice", "Node", "Service", "ServicePort", "SliceEndpoint",
           "PROXY_NAME_LABEL", "HEADLESS_LABEL", "SERVICE_NAME_LABEL", "ZONE_LABEL"]

#: Services with this label belong to another proxy; kube-proxy's informers leave them out.
PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
#: Set by the endpoint controllers on headless Services' slices; kube-proxy's informers leave them out.
HEADLESS_LABEL = "service.kubernetes.io/headless"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ZONE_LABEL = "topology.kubernetes.io/zone"
TOPOLOGY_ANNOTATIONS = ("service.kubernetes.io/topology-mode", "service.kubernetes.io/topology-aware-hints")


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str  # "" for an unnamed port
    protocol: str  # TCP | UDP | SCTP
    port: int
    target_port: str = ""  # a number or a container port's name, as written
    node_port: int = 0


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str  # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ips: tuple[str, ...]  # "None" for a headless Service
    ports: tuple[ServicePort, ...]
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress[].ip in VIP mode (ipMode unset or VIP)
    lb_proxy_ips: tuple[str, ...] = ()  # ingress IPs with ipMode Proxy: kube-proxy does not program them
    source_ranges: tuple[str, ...] = ()
    external_policy: str = "Cluster"
    internal_policy: str = "Cluster"
    health_check_node_port: int = 0
    affinity_timeout: int | None = None  # seconds with sessionAffinity ClientIP, else None
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    has_selector: bool = False
    traffic_distribution: str = ""
    location: str = ""  # where the object came from: file:line, or the API

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def label(self, name: str) -> str | None:
        return next((v for k, v in self.labels if k == name), None)

    def annotation(self, name: str) -> str | None:
        return next((v for k, v in self.annotations if k == name), None)


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str | None  # None when the slice leaves it out: kube-proxy ignores such a port
    protocol: str
    port: int | None


class SliceEndpoint(NamedTuple):
    """One endpoint of a slice (a NamedTuple: there are 100k of them in a large cluster)."""

    addresses: tuple[str, ...]
    ready: bool | None = None  # None as the API leaves it: kube-proxy reads nil Ready and Serving as true,
    serving: bool | None = None  # nil Terminating as false
    terminating: bool | None = None
    node_name: str | None = None
    zone: str | None = None
    zone_hints: tuple[str, ...] = ()
    node_hints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str  # the kubernetes.io/service-name label ("" if missing)
    address_type: str  # IPv4 | IPv6 | FQDN
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[SliceEndpoint, ...]
    labels: tuple[tuple[str, str], ...] = ()
    location: str = ""

    def label(self, name: str) -> str | None:
        return next((v for k, v in self.labels if k == name), None)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: tuple[tuple[str, str], ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()  # (type, address): InternalIP, ExternalIP, Hostname
    pod_cidrs: tuple[str, ...] = ()

    def label(self, name: str) -> str | None:
        return next((v for k, v in self.labels if k == name), None)

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(a for t, a in self.addresses if t in ("InternalIP", "ExternalIP"))


@dataclass(frozen=True, slots=True)
class ClusterState:
    services: tuple[Service, ...]
    slices: tuple[EndpointSlice, ...]
    nodes: tuple[Node, ...]
    source: str = ""
    #: per list ("services", "endpointslices", "nodes"), when read from the API
    resource_versions: tuple[tuple[str, str], ...] = ()

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)
