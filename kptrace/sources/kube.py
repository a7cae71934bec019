"""Read a node's data plane through the Kubernetes API (exec the bundle's read-only commands in that
node's kube-proxy pod), and the cluster state the data plane should match (Services, EndpointSlices,
Nodes). ``kubernetes`` lives here and nowhere else; importing it costs ~0.5 s, so only the commands that
use it load this module."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream

from kptrace.errors import EnvironmentProblem, KptraceError
from kptrace.sources.bundle import CommandResult

__all__ = ["RESOURCE_LISTINGS", "KubeRunner", "api", "configuration", "fetch_cluster_state", "kube_proxy_pod", "list_all",
           "node_names"]

DEFAULT_SELECTOR = "k8s-app=kube-proxy"
DEFAULT_NAMESPACE = "kube-system"
RBAC_FILE = "deploy/rbac.yaml"


class KubeNodeError(KptraceError):
    exit_code = 5


def configuration(kubeconfig: str | None, context: str | None) -> client.Configuration:
    """Kubeconfig (``--kubeconfig``, $KUBECONFIG, ~/.kube/config) and ``--context``, else the in-cluster config."""
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    except (ConfigException, OSError, TypeError, yaml.YAMLError) as e:
        problem = e
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
            try:
                config.load_incluster_config(client_configuration=cfg)
                return cfg
            except ConfigException as in_cluster:
                problem = in_cluster
        raise EnvironmentProblem(f"no usable kubeconfig: {problem}",
                                 hint="pass --kubeconfig FILE (and --context), or run kptrace in a pod with a service account") from None
    return cfg


def api(kubeconfig: str | None = None, context: str | None = None) -> client.CoreV1Api:
    """The core API client for ``kubeconfig`` and ``context`` (see :func:`configuration`)."""
    return client.CoreV1Api(client.ApiClient(configuration(kubeconfig, context)))


def _status_message(e: ApiException) -> str:
    """The ``message`` of the Status object the API server sent with an error, if it sent one."""
    try:
        return str(json.loads(e.body or "").get("message") or "")
    except (TypeError, ValueError, AttributeError):
        return ""


def _api_error(e: ApiException, what: str) -> KptraceError:
    if e.status == 403:
        return KubeNodeError(f"{what}: forbidden ({_status_message(e) or e.reason})",
                             hint="kptrace needs to list pods and nodes and to create pods/exec in the kube-proxy namespace "
                                  f"(ClusterRole kptrace-collect in {RBAC_FILE})")
    if e.status == 401:
        return KubeNodeError(f"{what}: unauthorized", hint="check the kubeconfig's credentials")
    return KubeNodeError(f"{what}: the API answered {e.status} {e.reason}")


def node_names(core: client.CoreV1Api) -> list[str]:
    """The names of the cluster's nodes (paged, raw JSON: see :func:`_get_page`)."""
    _, nodes = list_all(core.list_node, _NODES, core.api_client.configuration.host, 500, 30.0)
    return [n["metadata"]["name"] for n in nodes]


def kube_proxy_pod(core: client.CoreV1Api, node: str, *, selector: str = DEFAULT_SELECTOR,
                   namespace: str = DEFAULT_NAMESPACE) -> str:
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=selector, field_selector=f"spec.nodeName={node}",
                                        _request_timeout=30).items
    except ApiException as e:
        raise _api_error(e, f"{node}: finding its kube-proxy pod") from None
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise _unreachable(core.api_client.configuration.host, e, 30, f"{node}: finding its kube-proxy pod") from None
    running = [p for p in pods if (p.status and p.status.phase) == "Running"]
    if not running:
        raise KubeNodeError(f"{node}: no running kube-proxy pod (labels {selector} in {namespace})",
                            hint="where kube-proxy is not a pod (a systemd service, or another label), use --ssh, "
                                 "or give --kube-proxy-selector")
    meta = running[0].metadata
    assert meta is not None and meta.name  # a pod the API lists has a name
    return meta.name


class KubeRunner:
    """Runs the bundle's commands in a node's kube-proxy pod (exec; read-only commands only)."""

    def __init__(self, core: client.CoreV1Api, node: str, *, selector: str = DEFAULT_SELECTOR,
                 namespace: str = DEFAULT_NAMESPACE, timeout: float = 60.0) -> None:
        self.core = core
        self.name = node
        self.namespace = namespace
        self.timeout = timeout
        self.pod = kube_proxy_pod(core, node, selector=selector, namespace=namespace)
        # stream() swaps the ApiClient's call_api for a websocket one while it runs; on the client that collect
        # shares between its threads, another node's pod lookup would go out as a websocket handshake.
        self._exec_api = client.CoreV1Api(client.ApiClient(core.api_client.configuration))

    def run(self, argv: tuple[str, ...]) -> CommandResult:
        try:
            resp = stream(self._exec_api.connect_get_namespaced_pod_exec, self.pod, self.namespace, command=list(argv),
                          stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
            resp.run_forever(timeout=self.timeout)
            out, err = resp.read_stdout(), resp.read_stderr()
            status_text = resp.read_channel(3)
            resp.close()
        except ApiException as e:
            raise _api_error(e, f"{self.name}: exec in {self.namespace}/{self.pod}") from None
        except OSError as e:
            raise KubeNodeError(f"{self.name}: exec in {self.namespace}/{self.pod} failed: {e}") from None
        return CommandResult(_exit_code(status_text), out or "", err or "")

    def close(self) -> None:
        self._exec_api.api_client.close()


def _exit_code(status_text: str) -> int:
    """The exec's exit code from its status message (the error channel)."""
    if not status_text:
        return 1
    try:
        status = json.loads(status_text)
    except json.JSONDecodeError:
        return 1
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "1"))
            except ValueError:
                return 1
    message = status.get("message", "")
    return 127 if "not found" in message else 1


@dataclass(frozen=True, slots=True)
class _Listing:
    """One list of the cluster state: what it is called, the kind and apiVersion of its items, and the client call."""

    resource: str
    kind: str
    api_version: str
    permission: str  # the RBAC verb and resource, for the message when the credentials lack them
    api_class: str
    method: str


_NODES = _Listing("nodes", "Node", "v1", "list nodes (core API group)", "CoreV1Api", "list_node")

#: The order of ``kubectl get services,endpointslices,nodes``.
RESOURCE_LISTINGS = (
    _Listing("services", "Service", "v1", "list services (core API group)", "CoreV1Api", "list_service_for_all_namespaces"),
    _Listing("endpointslices", "EndpointSlice", "discovery.k8s.io/v1", "list endpointslices (discovery.k8s.io API group)",
             "DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces"),
    _NODES,
)

#: Seconds to wait before the second and third attempt at a page the API server failed to give (5xx, 429).
_RETRY_DELAYS = (0.2, 0.5)


class _ContinueExpired(Exception):
    """The API server answered 410 Gone to a continue token: the snapshot it pointed into was compacted away."""


def fetch_cluster_state(kubeconfig: str | None = None, context: str | None = None, *, page_size: int = 500,
                        timeout: float = 30.0) -> dict:
    """What ``kubectl get services,endpointslices,nodes -A -o json`` prints: a ``List`` whose items carry their
    ``kind`` and ``apiVersion``; ``metadata["kptrace/resourceVersions"]`` holds each list's resourceVersion.

    Each list is read in pages of ``page_size``; an API server silent for ``timeout`` seconds is an error.
    Raises :class:`EnvironmentProblem` when the API cannot be reached or read (a missing permission names it).
    """
    cfg = configuration(kubeconfig, context)
    # Our own loop retries what is worth retrying (5xx); urllib3's default would resend a timed-out request 3 times.
    cfg.retries = False
    items: list[dict] = []
    versions: dict[str, str] = {}
    with client.ApiClient(cfg) as api_client:
        for listing in RESOURCE_LISTINGS:
            list_page = getattr(getattr(client, listing.api_class)(api_client), listing.method)
            versions[listing.resource], found = list_all(list_page, listing, cfg.host, page_size, timeout)
            items += found
    return {"apiVersion": "v1", "kind": "List",
            "metadata": {"resourceVersion": "", "kptrace/resourceVersions": versions}, "items": items}


def list_all(list_page, listing: _Listing, host: str, page_size: int, timeout: float) -> tuple[str, list[dict]]:
    """Every item of one list (kind and apiVersion added), page by page, and the list's resourceVersion."""
    for _ in range(2):  # an expired continue token: relist from the start once, as kubectl does
        items: list[dict] = []
        token = ""
        try:
            while True:
                page = _get_page(list_page, listing, host, limit=page_size, token=token, timeout=timeout)
                # List responses leave kind and apiVersion out of their items; kubectl puts them first.
                items += [{"apiVersion": listing.api_version, "kind": listing.kind, **item} for item in page.get("items") or ()]
                meta = page.get("metadata") or {}
                token = meta.get("continue") or ""
                if not token:
                    return str(meta.get("resourceVersion") or ""), items
        except _ContinueExpired:
            continue
    raise EnvironmentProblem(f"listing {listing.resource}: the continue token expired (410 Gone) again after a full relist",
                             hint="the API server compacts its history faster than kptrace can page through the list; "
                                  "retry, or use a larger page size so the list takes fewer requests")


def _get_page(list_page, listing: _Listing, host: str, *, limit: int, token: str, timeout: float) -> dict:
    """One page, parsed straight from the JSON body: the client's model objects take 3-5x as long
    (a page of 500 EndpointSlices, kubernetes 37: 0.34 s against 0.075 s)."""
    kwargs: dict = {"limit": limit, "_preload_content": False, "_request_timeout": timeout}
    if token:
        kwargs["_continue"] = token
    for attempt, delay in enumerate((*_RETRY_DELAYS, None), 1):
        try:
            response = list_page(**kwargs)
            try:
                body = response.data
            finally:
                response.release_conn()
            return json.loads(body)
        except ApiException as e:
            if e.status == 410 and token:
                raise _ContinueExpired from None
            if delay is not None and (e.status == 429 or 500 <= e.status <= 599):
                time.sleep(delay)
                continue
            raise _list_error(e, listing, host, attempt) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _unreachable(host, e, timeout, f"listing {listing.resource}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EnvironmentProblem(f"listing {listing.resource}: the API at {host} answered something that is not JSON: {e}") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def _list_error(e: ApiException, listing: _Listing, host: str, attempts: int) -> KptraceError:
    what = f"listing {listing.resource}"
    rbac_hint = (f"apply {RBAC_FILE} (ClusterRole kptrace-drift: get/list/watch on services, endpointslices and nodes) "
                 "and bind it to the kubeconfig's user or service account")
    if e.status == 0:  # the client's wrapper for a TLS failure
        return _unreachable(host, e.reason, 0, what)
    if e.status == 403:
        return EnvironmentProblem(f"{what}: forbidden: the credentials lack permission to {listing.permission} cluster-wide"
                                  f" ({_status_message(e) or e.reason})", hint=rbac_hint)
    if e.status == 401:
        return EnvironmentProblem(f"{what}: unauthorized: the API server at {host} did not accept the kubeconfig's credentials",
                                  hint=f"check the kubeconfig's user (an expired token?); the permissions needed are in {RBAC_FILE}")
    if e.status == 404 and listing.resource == "endpointslices":
        return EnvironmentProblem(f"{what}: the API server has no discovery.k8s.io/v1 EndpointSlices (Kubernetes older than 1.21)",
                                  hint="kptrace drift needs Kubernetes 1.21 or newer")
    message = _status_message(e)
    return EnvironmentProblem(f"{what}: the API at {host} answered {e.status} {e.reason}" + (f": {message}" if message else "")
                              + (f" (after {attempts} attempts)" if attempts > 1 else ""))


def _unreachable(host: str, e: object, timeout: float, what: str) -> EnvironmentProblem:
    cause = getattr(e, "reason", None) if isinstance(e, urllib3.exceptions.MaxRetryError) else e
    if isinstance(cause, urllib3.exceptions.NewConnectionError):  # before its base class ConnectTimeoutError
        detail = str(cause).split(": ", 1)[-1]
    elif isinstance(cause, urllib3.exceptions.ReadTimeoutError) and timeout:
        detail = f"no answer within {timeout:g} s"
    elif isinstance(cause, urllib3.exceptions.ConnectTimeoutError) and timeout:
        detail = f"no connection within {timeout:g} s"
    else:
        detail = str(cause)
    return EnvironmentProblem(f"cannot reach the Kubernetes API at {host}: {detail} ({what})",
                              hint="check the kubeconfig's server address and that the cluster is up; "
                                   "a slow API server needs a longer timeout")
