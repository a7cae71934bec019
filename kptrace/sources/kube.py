"""Read a node's data plane through the Kubernetes API: exec the bundle's read-only commands in that
node's kube-proxy pod (``kubernetes`` lives here and nowhere else; importing it costs ~0.5 s, so only the
commands that use it load this module)."""

from __future__ import annotations

import json
import os

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream

from kptrace.errors import EnvironmentProblem, KptraceError
from kptrace.sources.bundle import CommandResult

__all__ = ["KubeRunner", "api", "kube_proxy_pod", "node_names"]

DEFAULT_SELECTOR = "k8s-app=kube-proxy"
DEFAULT_NAMESPACE = "kube-system"


class KubeNodeError(KptraceError):
    exit_code = 5


def api(kubeconfig: str | None = None, context: str | None = None) -> client.CoreV1Api:
    """Kubeconfig (``--kubeconfig``, $KUBECONFIG, ~/.kube/config) and ``--context``, else the in-cluster config."""
    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
    except (ConfigException, FileNotFoundError, TypeError) as e:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
            config.load_incluster_config()
        else:
            raise EnvironmentProblem(f"no usable kubeconfig: {e}",
                                     hint="pass --kubeconfig FILE (and --context), or run kptrace in a pod with a service account") from None
    return client.CoreV1Api()


def _api_error(e: ApiException, what: str) -> KptraceError:
    if e.status == 403:
        return KubeNodeError(f"{what}: forbidden ({e.reason})",
                             hint="kptrace needs to list pods and nodes and to create pods/exec in the kube-proxy namespace")
    if e.status == 401:
        return KubeNodeError(f"{what}: unauthorized", hint="check the kubeconfig's credentials")
    return KubeNodeError(f"{what}: the API answered {e.status} {e.reason}")


def node_names(core: client.CoreV1Api) -> list[str]:
    try:
        return [n.metadata.name for n in core.list_node(_request_timeout=30).items]
    except ApiException as e:
        raise _api_error(e, "listing nodes") from None
    except OSError as e:
        raise EnvironmentProblem(f"cannot reach the Kubernetes API: {e}") from None


def kube_proxy_pod(core: client.CoreV1Api, node: str, *, selector: str = DEFAULT_SELECTOR,
                   namespace: str = DEFAULT_NAMESPACE) -> str:
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=selector, field_selector=f"spec.nodeName={node}",
                                        _request_timeout=30).items
    except ApiException as e:
        raise _api_error(e, f"{node}: finding its kube-proxy pod") from None
    except OSError as e:
        raise EnvironmentProblem(f"cannot reach the Kubernetes API: {e}") from None
    running = [p for p in pods if (p.status and p.status.phase) == "Running"]
    if not running:
        raise KubeNodeError(f"{node}: no running kube-proxy pod (labels {selector} in {namespace})",
                            hint="where kube-proxy is not a pod (a systemd service, or another label), use --ssh, "
                                 "or give --kube-proxy-selector")
    return running[0].metadata.name


class KubeRunner:
    """Runs the bundle's commands in a node's kube-proxy pod (exec; read-only commands only)."""

    def __init__(self, core: client.CoreV1Api, node: str, *, selector: str = DEFAULT_SELECTOR,
                 namespace: str = DEFAULT_NAMESPACE, timeout: float = 60.0) -> None:
        self.core = core
        self.name = node
        self.namespace = namespace
        self.timeout = timeout
        self.pod = kube_proxy_pod(core, node, selector=selector, namespace=namespace)

    def run(self, argv: tuple[str, ...]) -> CommandResult:
        try:
            resp = stream(self.core.connect_get_namespaced_pod_exec, self.pod, self.namespace, command=list(argv),
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
        pass


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
