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

The watch API (``?watch=1``) as the API server speaks it: a chunked stream of JSON lines
(``{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": ...}``) from the given
``resourceVersion`` on (none or "0": the current objects as ADDED first), BOOKMARK events every
``bookmark_interval`` seconds when ``allowWatchBookmarks=true``, the stream closed after
``timeoutSeconds``; a ``resourceVersion`` older than the retained history gets one ERROR event with a 410
``Expired`` Status ("too old resource version"), as etcd compaction makes a real server answer.
:meth:`StandIn.put` and :meth:`StandIn.delete` change objects (each change takes the next resourceVersion
and goes to every open watch); :meth:`StandIn.compact` forgets the history; :meth:`StandIn.disconnect`
drops open watch connections without the closing chunk. Where it differs from a real API server: one
process with the whole history in memory, field selectors only as metadata.name=X, no label selectors on lists and watches, no watch cache window
(history is kept until :meth:`compact`), HTTP/1.1 without TLS, and no request priority and fairness.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import itertools
import json
import struct
import subprocess
import threading
import time
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
PATH_OF_KIND = {kind: path for path, (kind, _, _) in LISTS.items()}

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
    delay_times: int | None = None  # the delay applies to the next N requests only (None: every time)


def status_body(code: int, message: str, *, reason: str = "", details: dict | None = None) -> dict:
    """A ``Status`` object, the body the API server sends with every error."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason or _REASONS.get(code, "InternalError"), "code": code}
    if details is not None:
        body["details"] = details
    return body


def _selected(items: list, q: dict) -> list:
    """``items`` (objects, or history entries ending in their object) that match a ``fieldSelector=metadata.name=X``;
    the only field selector the stand-in knows on lists and watches."""
    selector = q.get("fieldSelector", [""])[0]
    if not selector.startswith("metadata.name="):
        return items
    name = selector.removeprefix("metadata.name=")
    return [i for i in items if (i[-1] if isinstance(i, tuple) else i)["metadata"]["name"] == name]


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
                 resource_version: int = 1000, bookmark_interval: float = 1.0) -> None:
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
        # The watch history: (resourceVersion, path, event type, object); a watch from before _floor gets 410.
        self.bookmark_interval = bookmark_interval
        self.history: list[tuple[int, str, str, dict]] = []
        self._floor = resource_version
        self._changed = threading.Condition(self._lock)
        self._cut = 0  # bumped by disconnect(): open watches drop their connection
        self._latest: dict[str, int] = {}  # path -> resourceVersion of its last change
        self._positions: dict[str, dict[tuple[str, str], int]] = {}
        self.watches_open = 0
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
                if url.path in standin.lists and q.get("watch", [""])[0] in ("1", "true"):
                    return standin._watch(self, url.path, q)
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

    def delay(self, path: str, seconds: float, *, times: int | None = None) -> None:
        """Wait ``seconds`` before answering ``path`` (the next ``times`` requests only, or all; until the stand-in
        stops, at the latest)."""
        self.faults[path] = Fault(delay=seconds, delay_times=times)

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
            delay = fault.delay if fault.delay_times != 0 else 0.0
            if delay and fault.delay_times is not None:
                fault.delay_times -= 1
        if delay:
            self._released.wait(delay)
        if answer is None:
            return False
        handler._json(*answer)
        return True

    def _list(self, path: str, q: dict) -> tuple[int, dict]:
        """One page of a list: ``limit`` items from where the continue token points, and a token for the rest."""
        kind, group, _ = LISTS[path]
        items = _selected(self.lists[path], q)
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

    # -- the watch API -------------------------------------------------------------------------------------

    def put(self, obj: dict) -> int:
        """Create or replace a Service, EndpointSlice or Node (``kind`` says which); returns its new resourceVersion."""
        path = PATH_OF_KIND[obj["kind"]]
        item = json.loads(json.dumps({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}))
        key = (item["metadata"].get("namespace", ""), item["metadata"]["name"])
        with self._lock:
            rv = next(self._versions)
            item["metadata"]["resourceVersion"] = str(rv)
            items = self.lists.setdefault(path, [])
            at = self._position(path).get(key)
            old = at is not None
            if old:
                items[at] = item
            else:
                items.append(item)
                items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
                self._positions.pop(path, None)
            self.history.append((rv, path, "MODIFIED" if old else "ADDED", item))
            self._latest[path] = rv
            self._changed.notify_all()
        return rv

    def _position(self, path: str) -> dict[tuple[str, str], int]:
        """(namespace, name) -> index in the sorted list of ``path`` (under the lock; made again after an insert or delete)."""
        if path not in self._positions:
            self._positions[path] = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): i
                                     for i, o in enumerate(self.lists.get(path, ()))}
        return self._positions[path]

    def delete(self, kind: str, namespace: str, name: str) -> int:
        """Delete an object; open watches get a DELETED event with its last state."""
        path = PATH_OF_KIND[kind]
        with self._lock:
            items = self.lists[path]
            item = items.pop(self._position(path)[(namespace, name)])
            self._positions.pop(path, None)
            rv = next(self._versions)
            item = {**item, "metadata": {**item["metadata"], "resourceVersion": str(rv)}}
            self.history.append((rv, path, "DELETED", item))
            self._latest[path] = rv
            self._changed.notify_all()
        return rv

    def get(self, kind: str, namespace: str, name: str) -> dict:
        """A copy of a stored object, with its ``kind`` (to change and :meth:`put` back)."""
        for o in self.lists[PATH_OF_KIND[kind]]:
            if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) == (namespace, name):
                return {"kind": kind, **json.loads(json.dumps(o))}
        raise KeyError((kind, namespace, name))

    def compact(self) -> None:
        """Forget the history (etcd compaction): a watch resumed from any resourceVersion seen so far gets 410 Gone."""
        with self._lock:
            self._floor = next(self._versions)
            self.history.clear()

    def disconnect(self) -> None:
        """Drop every open watch connection mid-stream, without the closing chunk (a load balancer's idle cut)."""
        with self._lock:
            self._cut += 1
            self._changed.notify_all()

    def _since(self, path: str, rv: int) -> list[tuple[int, str, dict]]:
        """The history of ``path`` after ``rv`` (under the lock; the history is in resourceVersion order)."""
        i = bisect.bisect_right(self.history, rv, key=lambda e: e[0])
        return [(v, t, o) for v, p, t, o in self.history[i:] if p == path]

    def _watch(self, handler, path: str, q: dict) -> None:
        kind, group, _ = LISTS[path]
        api_version = f"{group}/v1" if group else "v1"
        since = q.get("resourceVersion", [""])[0]
        bookmarks = q.get("allowWatchBookmarks", [""])[0] == "true"
        timeout = float(q.get("timeoutSeconds", ["1800"])[0])
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def send(event_type: str, obj: dict) -> None:
            data = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()

        with self._lock:
            cut = self._cut
            if since in ("", "0"):  # no resourceVersion: the current state first, as synthetic ADDED events
                start = int(next(self._versions))
                backlog = [(start, "ADDED", o) for o in _selected(self.lists[path], q)]
            else:
                start = int(since)
                if start < self._floor:
                    backlog = None
                else:
                    backlog = _selected(self._since(path, start), q)
            self.watches_open += 1
        try:
            if backlog is None:
                send("ERROR", status_body(410, f"too old resource version: {start} ({self._floor})", reason="Expired"))
                handler.wfile.write(b"0\r\n\r\n")
                return
            sent = start
            for rv, t, o in backlog:
                send(t, {"kind": kind, "apiVersion": api_version, **o})
                sent = max(sent, rv)
            end = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.bookmark_interval
            while not self._released.is_set():
                with self._lock:
                    wait = min(end, next_bookmark) - time.monotonic()
                    if wait > 0 and self._cut == cut and self._latest.get(path, 0) <= sent:
                        self._changed.wait(wait)
                    if self._cut != cut:
                        handler.close_connection = True
                        handler.connection.shutdown(2)  # no closing chunk: the client sees the connection drop
                        return
                    # A watch that keeps up is not ended by compaction (the API server's watch cache serves it).
                    new = _selected(self._since(path, sent), q)
                    current = self.history[-1][0] if self.history else sent
                for rv, t, o in new:
                    send(t, {"kind": kind, "apiVersion": api_version, **o})
                    sent = max(sent, rv)
                now = time.monotonic()
                if now >= end:
                    break
                if now >= next_bookmark:
                    next_bookmark = now + self.bookmark_interval
                    if bookmarks:
                        sent = max(sent, current)
                        send("BOOKMARK", {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(sent)}})
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except OSError:  # the client went away
            handler.close_connection = True
        finally:
            with self._lock:
                self.watches_open -= 1

    def kubeconfig(self, path) -> str:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{self.port}\n"
            "users:\n- name: tester\n  user:\n    token: kptrace-test\n"
            "contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\n"
            "current-context: standin\n")
        return str(path)
