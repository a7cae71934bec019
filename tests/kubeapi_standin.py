"""A stand-in for the Kubernetes API server, for the real ``kubernetes`` client: nodes and pods as
JSON (label and field selectors honoured), and pod exec over the websocket protocol
(v4.channel.k8s.io: a channel byte before each message; stdout 1, stderr 2, status 3). Exec runs the
command for real, inside the network namespace that stands for the pod's node, so what comes back
is that namespace's kernel state. The API server is the one part that cannot run here; the client,
the protocol and the commands are real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class StandIn:
    """``nodes``: node name -> network namespace of its kube-proxy pod (None: no kube-proxy pod there)."""

    def __init__(self, nodes: dict[str, str | None], *, forbid_exec: bool = False, missing_tools: set[str] = frozenset()) -> None:
        self.nodes = nodes
        self.forbid_exec = forbid_exec
        self.missing_tools = set(missing_tools)
        self.requests: list[str] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                standin.requests.append(self.path)
                url = urlparse(self.path)
                q = parse_qs(url.query)
                parts = url.path.strip("/").split("/")
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
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path) -> str:
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{self.port}\n"
            "users:\n- name: tester\n  user:\n    token: kptrace-test\n"
            "contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\n"
            "current-context: standin\n")
        return str(path)
