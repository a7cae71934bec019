"""A stand-in for the Kubernetes API server, for the real ``kubernetes`` client: nodes and pods as
JSON (label and field selectors honoured), and pod exec over the websocket protocol
(v4.channel.k8s.io: a channel byte before each message; stdout 1, stderr 2, status 3). Exec runs the
command for real, inside the network namespace that stands for the pod's node, so what comes back
is that namespace's kernel state. The API server is the one part that cannot run here; the client,
the protocol and the commands are real.

Recorded objects (Services, EndpointSlices, Nodes, as ``kubectl get -o json`` prints them) are served
as the API server lists them: ``kind: ServiceList``, a ``resourceVersion`` per list, items without
``kind``/``apiVersion``, sorted by namespace and name, paged with ``limit`` and opaque ``continue``
tokens (``remainingItemCount`` while more remain). :meth:`StandIn.fail`, :meth:`StandIn.delay` and
:meth:`StandIn.expire_continue` inject faults per path; ``requests`` records every path with its query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import struct
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: path -> (kind of the items, group of the resource, resource), for the lists served from recorded objects.
LISTS = {
    "/api/v1/services": ("Service", "", "services"),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "discovery.k8s.io", "endpointslices"),
    "/api/v1/nodes": ("Node", "", "nodes"),
}

#: What a real API server says, per status, when the test does not say otherwise.
_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 410: "Expired",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
_EXPIRED = ("The provided continue parameter is too old to display a consistent list result. You can start a new list "
            "without the continue parameter, or use the continue token in this response to retrieve the remainder of "
            "the results. Continuing with the provided token results in an inconsistent list - objects that were "
            "created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")


@dataclass
class Fault:
    """What to do instead of answering a path normally; ``times`` counts down (None: every time)."""

    status: int = 0
    message: str = ""
    times: int | None = None
    delay: float = 0.0
    expire_continue: int = 0  # the next N requests that carry a continue token get 410 Gone (reason Expired)


def status_body(code: int, message: str, *, reason: str = "", details: dict | None = None) -> dict:
    """A ``Status`` object, the body the API server sends with every error."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason or _REASONS.get(code, "InternalError"), "code": code}
    if details is not None:
        body["details"] = details
    return body


def _default_message(path: str, code: int) -> tuple[str, dict | None]:
    _, group, resource = LISTS.get(path, ("", "", path.rsplit("/", 1)[-1]))
    full = f"{resource}.{group}" if group else resource
    if code == 403:
        return (f'{full} is forbidden: User "system:serviceaccount:default:kptrace-test" cannot list resource "{resource}" '
                f'in API group "{group}" at the cluster scope', {"group": group, "kind": resource} if group else {"kind": resource})
    if code == 404:
        return "the server could not find the requested resource", {}
    if code == 401:
        return "Unauthorized", None
    return "etcdserver: request timed out", None


class StandIn:
    """``nodes``: node name -> network namespace of its kube-proxy pod (None: no kube-proxy pod there).
    ``objects``: Service, EndpointSlice and Node items to list (Nodes among them replace the ``nodes`` list)."""

    def __init__(self, nodes: dict[str, str | None] | None = None, *, forbid_exec: bool = False,
                 missing_tools: set[str] = frozenset(), objects: list[dict] | None = None,
                 resource_version: int = 1000) -> None:
        self.nodes = nodes or {}
        self.forbid_exec = forbid_exec
        self.missing_tools = set(missing_tools)
        self.requests: list[str] = []
        self.faults: dict[str, Fault] = {}
        self.lists: dict[str, list[dict]] = {}
        for path, (kind, _, _) in LISTS.items():
            found = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in objects or () if o.get("kind") == kind]
            if found or kind != "Node":
                found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
                self.lists[path] = found
        # Every fresh list is a new snapshot: a later resourceVersion, as in a cluster that keeps changing.
        self._versions = itertools.count(resource_version)
        self._lock = threading.Lock()
        self._released = threading.Event()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: Nagle would hold the body ~40 ms

            def log_message(self, *args):
                pass

            def do_GET(self):
                standin.requests.append(self.path)
                url = urlparse(self.path)
                q = parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                if standin._fault(self, url.path, q):
                    return None
                if url.path in standin.lists:
                    return self._json(*standin._list(url.path, q))
                if url.path == "/api/v1/nodes":
                    return self._json(200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "1"},
                                            "items": [{"metadata": {"name": n}} for n in standin.nodes]})
                if len(parts) == 5 and parts[:2] == ["api", "v1"] and parts[4] == "pods":
                    return self._pods(parts[3], q)
                if len(parts) == 7 and parts[4] == "pods" and parts[6] == "exec":
                    return self._exec(parts[5], q)
                return self._json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                        "code": 404, "message": f"{url.path} not found"})

            def _json(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (its timeout fired during a delay)
                    self.close_connection = True

            def _pods(self, namespace: str, q: dict) -> None:
                labels = dict(s.split("=", 1) for s in q.get("labelSelector", [""])[0].split(",") if "=" in s)
                node = q.get("fieldSelector", [""])[0].removeprefix("spec.nodeName=")
                items = []
                for name, ns in standin.nodes.items():
                    if ns is None or (node and node != name) or namespace != "kube-system" or labels != {"k8s-app": "kube-proxy"}:
                        continue
                    items.append({"metadata": {"name": f"kube-proxy-{name}", "namespace": "kube-system",
                                               "labels": {"k8s-app": "kube-proxy"}},
                                  "spec": {"nodeName": name, "containers": [{"name": "kube-proxy", "image": "kube-proxy"}]},
                                  "status": {"phase": "Running"}})
                self._json(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items})

            def _exec(self, pod: str, q: dict) -> None:
                if standin.forbid_exec:
                    return self._json(403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                                            "code": 403, "message": "pods \"x\" is forbidden: cannot create resource \"pods/exec\""})
                key = self.headers.get("Sec-WebSocket-Key", "")
                accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
                self.send_response(101, "Switching Protocols")
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
                self.end_headers()
                node = pod.removeprefix("kube-proxy-")
                argv = q.get("command", [])
                if argv and argv[0] in standin.missing_tools:
                    status = {"metadata": {}, "status": "Failure", "reason": "InternalError",
                              "message": f'OCI runtime exec failed: exec: "{argv[0]}": executable file not found in $PATH'}
                    self._frame(b"\x03" + json.dumps(status).encode())
                else:
                    res = subprocess.run(["ip", "netns", "exec", standin.nodes[node], *argv], capture_output=True)
                    if res.stdout:
                        self._frame(b"\x01" + res.stdout)
                    if res.stderr:
                        self._frame(b"\x02" + res.stderr)
                    status = ({"metadata": {}, "status": "Success"} if res.returncode == 0 else
                              {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                               "details": {"causes": [{"reason": "ExitCode", "message": str(res.returncode)}]}})
                    self._frame(b"\x03" + json.dumps(status).encode())
                self._frame(struct.pack("!H", 1000), opcode=0x8)
                self.close_connection = True

            def _frame(self, payload: bytes, opcode: int = 0x2) -> None:
                n = len(payload)
                head = bytes([0x80 | opcode])
                if n < 126:
                    head += bytes([n])
                elif n < 1 << 16:
                    head += bytes([126]) + struct.pack("!H", n)
                else:
                    head += bytes([127]) + struct.pack("!Q", n)
                self.wfile.write(head + payload)
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() waits for the next poll, 0.5 s by default, at the end of every test.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    def fail(self, path: str, status: int, *, times: int | None = None, message: str = "") -> None:
        """Answer ``path`` with ``status`` and a Status body (the first ``times`` requests only, or all)."""
        self.faults[path] = Fault(status=status, message=message, times=times)

    def delay(self, path: str, seconds: float) -> None:
        """Wait ``seconds`` before answering ``path`` (until the stand-in stops, at the latest)."""
        self.faults[path] = Fault(delay=seconds)

    def expire_continue(self, path: str, times: int = 1) -> None:
        """The next ``times`` requests for ``path`` with a continue token get 410 Gone, reason Expired."""
        self.faults[path] = Fault(expire_continue=times)

    def queries(self, path: str) -> list[dict[str, list[str]]]:
        """The parsed query of every request for ``path``, in order."""
        return [parse_qs(urlparse(r).query) for r in self.requests if urlparse(r).path == path]

    def _fault(self, handler, path: str, q: dict) -> bool:
        """Apply the fault injected for ``path``, if any; True when it answered the request."""
        with self._lock:
            fault = self.faults.get(path)
            if fault is None:
                return False
            if fault.expire_continue and q.get("continue"):
                fault.expire_continue -= 1
                answer = (410, status_body(410, _EXPIRED, reason="Expired"))
            elif fault.status and fault.times != 0:
                if fault.times is not None:
                    fault.times -= 1
                message, details = _default_message(path, fault.status)
                answer = (fault.status, status_body(fault.status, fault.message or message, details=details))
            else:
                answer = None
        if fault.delay:
            self._released.wait(fault.delay)
        if answer is None:
            return False
        handler._json(*answer)
        return True

    def _list(self, path: str, q: dict) -> tuple[int, dict]:
        """One page of a list: ``limit`` items from where the continue token points, and a token for the rest."""
        kind, group, _ = LISTS[path]
        items = self.lists[path]
        token = q.get("continue", [""])[0]
        try:
            limit = int(q.get("limit", ["0"])[0])
            if token:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                version, start = str(state["rv"]), int(state["start"])
            else:
                with self._lock:
                    version, start = str(next(self._versions)), 0
        except (ValueError, KeyError, TypeError, binascii.Error):
            return 400, status_body(400, "continue key is not valid: illegal base64 data" if token else "invalid limit")
        end = start + limit if limit > 0 else len(items)
        meta: dict = {"resourceVersion": version}
        if end < len(items):
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"v": "meta.k8s.io/v1", "rv": int(version), "start": end}).encode()).decode()
            meta["remainingItemCount"] = len(items) - end
        return 200, {"kind": f"{kind}List", "apiVersion": f"{group}/v1" if group else "v1",
                     "metadata": meta, "items": items[start:end]}

    def kubeconfig(self, path) -> str:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{self.port}\n"
            "users:\n- name: tester\n  user:\n    token: kptrace-test\n"
            "contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\n"
            "current-context: standin\n")
        return str(path)
