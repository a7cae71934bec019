"""Read a node's data plane over SSH (paramiko lives here and nowhere else).

Honours ``~/.ssh/config`` (Host aliases, User, Port, IdentityFile, ProxyJump one hop deep,
UserKnownHostsFile), the agent and the usual keys; verifies host keys against known_hosts and refuses
unknown or changed keys unless ``accept_new_host_key`` (which accepts unknown ones, never changed ones).
Runs only the bundle's read-only commands, through ``sudo -n`` when the login is not root; never puts a
secret on a command line.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass

import paramiko

from kptrace.errors import EnvironmentProblem, InputError, KptraceError
from kptrace.sources.bundle import CommandResult

__all__ = ["SSHRunner", "SSHTarget", "parse_target"]


class NodeError(KptraceError):
    """One node could not be read; the message names it."""

    exit_code = 5


@dataclass(frozen=True, slots=True)
class SSHTarget:
    host: str  # as given (an alias in ~/.ssh/config, a name, or an address)
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return (f"{self.user}@" if self.user else "") + self.host + (f":{self.port}" if self.port else "")


def parse_target(text: str) -> SSHTarget:
    """``[user@]host[:port]`` (``[v6addr]:port`` for IPv6).

    >>> parse_target("ubuntu@node1:2222")
    SSHTarget(host='node1', user='ubuntu', port=2222)
    """
    user = None
    if "@" in text:
        user, _, text = text.rpartition("@")
    port = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host = text
    if not host:
        raise InputError(f"--ssh {text!r}: no host", hint="give [user@]host[:port]")
    try:
        return SSHTarget(host, user or None, int(port) if port else None)
    except ValueError:
        raise InputError(f"--ssh {text!r}: {port!r} is not a port", hint="give [user@]host[:port]") from None


def _config(path: str | None) -> paramiko.SSHConfig:
    path = path or os.path.expanduser("~/.ssh/config")
    cfg = paramiko.SSHConfig()
    if os.path.isfile(path):
        with open(path) as f:
            cfg.parse(f)
    return cfg


class SSHRunner:
    """Connects on creation; ``run(argv)`` runs one read-only command; ``close()`` hangs up."""

    client: paramiko.SSHClient

    def __init__(self, target: SSHTarget, *, config_path: str | None = None, accept_new_host_key: bool = False,
                 timeout: float = 10.0, command_timeout: float = 60.0) -> None:
        self.target = target
        self.timeout = timeout
        self.command_timeout = command_timeout
        cfg = _config(config_path)
        entry = cfg.lookup(target.host)
        self.hostname = entry.get("hostname", target.host)
        self.user = target.user or entry.get("user") or os.environ.get("USER") or "root"
        self.port = target.port or int(entry.get("port", 22))
        self.name = str(target)
        self._jump: paramiko.SSHClient | None = None
        known = [os.path.expanduser(p) for p in entry.get("userknownhostsfile", "~/.ssh/known_hosts").split()]
        identity = [os.path.expanduser(p) for p in entry.get("identityfile", [])]
        sock = None
        if entry.get("proxyjump") and entry["proxyjump"].lower() != "none":
            jump_target = parse_target(entry["proxyjump"].split(",")[0])
            jump = SSHRunner(jump_target, config_path=config_path, accept_new_host_key=accept_new_host_key, timeout=timeout)
            self._jump = jump.client
            try:
                sock = jump.client.get_transport().open_channel("direct-tcpip", (self.hostname, self.port), ("127.0.0.1", 0),
                                                                timeout=timeout)
            except (paramiko.SSHException, OSError) as e:
                raise NodeError(f"{self.name}: cannot reach {self.hostname}:{self.port} through {jump_target}: {e}") from None
        self.client = paramiko.SSHClient()
        for path in known:
            if os.path.isfile(path):
                self.client.load_host_keys(path)
        self._known_file = known[0] if known else None
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if accept_new_host_key else paramiko.RejectPolicy())
        try:
            self.client.connect(self.hostname, self.port, username=self.user, key_filename=identity or None, sock=sock,
                                timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                                allow_agent=True, look_for_keys=True)
        except paramiko.BadHostKeyException:
            raise NodeError(f"{self.name}: the host key of {self.hostname} has CHANGED (known_hosts has another)",
                            hint="if the node was rebuilt, remove its old key with `ssh-keygen -R`; otherwise do not connect") from None
        except paramiko.AuthenticationException:
            raise NodeError(f"{self.name}: authentication failed as {self.user}",
                            hint="kptrace uses your SSH agent, ~/.ssh/config's IdentityFile and the default keys") from None
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise NodeError(f"{self.name}: {self.hostname}'s host key is unknown (not in known_hosts)",
                                hint="check it and add it (ssh-keyscan), or pass --accept-new-host-key") from None
            raise NodeError(f"{self.name}: SSH failed: {e}") from None
        except (socket.timeout, TimeoutError):
            raise NodeError(f"{self.name}: no answer from {self.hostname}:{self.port} in {timeout:.0f} s") from None
        except ConnectionRefusedError:
            raise NodeError(f"{self.name}: connection refused by {self.hostname}:{self.port}", hint="is sshd running there?") from None
        except paramiko.ssh_exception.NoValidConnectionsError as e:
            if all(isinstance(x, ConnectionRefusedError) for x in e.errors.values()):
                raise NodeError(f"{self.name}: connection refused by {self.hostname}:{self.port}",
                                hint="is sshd running there?") from None
            raise NodeError(f"{self.name}: cannot connect to {self.hostname}:{self.port} ({e.strerror or e})") from None
        except OSError as e:
            raise NodeError(f"{self.name}: cannot connect to {self.hostname}:{self.port}: {e.strerror or e}") from None
        if accept_new_host_key and self._known_file:
            os.makedirs(os.path.dirname(self._known_file) or ".", exist_ok=True)
            self.client.save_host_keys(self._known_file)
        self.prefix = "" if self._exec("id -u")[1].strip() == "0" else "sudo -n "

    def _exec(self, command: str) -> tuple[int, str, str]:
        try:
            _, out, err = self.client.exec_command(command, timeout=self.command_timeout)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
            return out.channel.recv_exit_status(), stdout, stderr
        except (socket.timeout, TimeoutError):
            return 124, "", f"{command}: no answer in {self.command_timeout:.0f} s"
        except paramiko.SSHException as e:
            raise NodeError(f"{self.name}: the connection broke: {e}") from None

    def run(self, argv: tuple[str, ...]) -> CommandResult:
        # `command -v` first: "not installed" is normal for optional tools, and must not look like a failure.
        rc, _, _ = self._exec(f"command -v {shlex.quote(argv[0])} >/dev/null 2>&1 || test -x /usr/sbin/{shlex.quote(argv[0])}")
        if rc != 0:
            return CommandResult(127, "", f"{argv[0]}: command not found on {self.name}")
        rc, out, err = self._exec(self.prefix + "env PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH " + shlex.join(argv))
        if rc != 0 and self.prefix and "password is required" in err:
            raise EnvironmentProblem(f"{self.name}: sudo would ask {self.user} for a password to run {argv[0]}",
                                     hint=f"log in as root, or allow `sudo -n {' '.join(argv)}` for {self.user} on the node")
        return CommandResult(rc, out, err)

    def close(self) -> None:
        self.client.close()
        if self._jump is not None:
            self._jump.close()
