#!/usr/bin/env python3
"""Time the reference: ``iptables-nft-restore --test < dump`` inside a throwaway netns.

Each run creates a fresh network namespace (``kpt-bench-<pid>-<rand>``), runs the restore in it
and deletes the namespace again (also on error or Ctrl-C).  Only the restore command is timed:
the child process joins the namespace with setns(2) right before exec, so no ``ip netns exec``
overhead is counted.  The host's own netfilter rules are never touched.

If the dump uses ``-m nfacct --nfacct-name NAME``, the named accounting objects are created in
the namespace first (the match refuses to load without them); that is not timed either.

CLI::

    python3 benchmarks/reference.py /tmp/node.txt --repeat 3

Exit codes: 0 ok, 1 restore failed, 2 environment problem (not root, tool missing).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

__all__ = ["reference_seconds", "restore_once", "ReferenceUnavailable", "main"]

CLONE_NEWNET = 0x40000000


class ReferenceUnavailable(RuntimeError):
    """The reference cannot run here (not root, tool missing, no netns support)."""


class RestoreFailed(RuntimeError):
    """iptables-nft-restore --test rejected the dump."""


def _tool_for(path: str) -> str:
    """ip6tables-nft-restore for an ip6tables-save dump, else iptables-nft-restore."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if b"ip6tables" in head.split(b"\n", 1)[0]:
        return "ip6tables-nft-restore"
    return "iptables-nft-restore"


def _check_env(tool: str) -> str:
    if os.geteuid() != 0:
        raise ReferenceUnavailable("must run as root (needs to create a network namespace)")
    exe = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/local/sbin")
    if not exe:
        raise ReferenceUnavailable(f"{tool} not found (install the iptables package, nft backend)")
    if not shutil.which("ip") and not shutil.which("ip", path="/usr/sbin:/sbin:/bin"):
        raise ReferenceUnavailable("'ip' (iproute2) not found; needed for ip netns add/del")
    return exe


def _ip() -> str:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/bin") or "ip"


_libc = None


def _setns_fn():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.setns


def _enter_netns(name: str) -> None:
    """Join /run/netns/<name> in the calling process (used in the child before exec)."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _setns_fn()(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


class _Netns:
    """Context manager: a throwaway network namespace, always deleted."""

    def __init__(self) -> None:
        self.name = f"kpt-bench-{os.getpid()}-{secrets.token_hex(3)}"

    def __enter__(self) -> str:
        r = subprocess.run([_ip(), "netns", "add", self.name], capture_output=True, text=True)
        if r.returncode != 0:
            raise ReferenceUnavailable(f"ip netns add failed: {r.stderr.strip()}")
        return self.name

    def __exit__(self, *exc) -> None:
        subprocess.run([_ip(), "netns", "del", self.name], capture_output=True)


def _nfacct_names(path: str) -> list[str]:
    names: set[str] = set()
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if "--nfacct-name" in line:
                names.update(re.findall(r"--nfacct-name\s+\"?([^\s\"]+)", line))
    return sorted(names)


def _create_nfacct(ns: str, names: list[str]) -> None:
    """Create nfacct objects in netns ``ns`` via nfnetlink (in a forked child)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            _enter_netns(ns)
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
            for seq, name in enumerate(names, 1):
                payload = name.encode() + b"\0"
                attr = struct.pack("HH", 4 + len(payload), 1) + payload  # NFACCT_NAME
                attr += b"\0" * ((4 - len(attr) % 4) % 4)
                body = struct.pack("BBH", socket.AF_UNSPEC, 0, 0) + attr  # nfgenmsg
                # type = NFNL_SUBSYS_ACCT(7) << 8 | NFNL_MSG_ACCT_NEW(0);
                # flags = REQUEST|ACK|EXCL|CREATE
                msg = struct.pack("IHHII", 16 + len(body), 7 << 8, 0x1 | 0x4 | 0x200 | 0x400, seq, 0) + body
                s.send(msg)
                reply = s.recv(65536)
                err = struct.unpack_from("i", reply, 16)[0]
                if err not in (0, -17):  # EEXIST is fine
                    code = -err
                    break
            s.close()
        except BaseException:
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise ReferenceUnavailable(f"could not create nfacct objects {names} in netns (code {rc})")


def restore_once(path: str, *, exe: str | None = None) -> float:
    """One timed ``iptables-nft-restore --test < path`` in a fresh throwaway netns."""
    tool = _tool_for(path)
    exe = exe or _check_env(tool)
    nfacct = _nfacct_names(path)
    with _Netns() as ns:
        if nfacct:
            _create_nfacct(ns, nfacct)
        _setns_fn()  # load libc before forking
        with open(path, "rb") as fh:
            t0 = time.perf_counter()
            r = subprocess.run([exe, "--test"], stdin=fh, capture_output=True,
                               preexec_fn=lambda: _enter_netns(ns))
            dt = time.perf_counter() - t0
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).decode(errors="replace").strip()
        raise RestoreFailed(f"{tool} --test exited {r.returncode}: {msg[:2000]}")
    return dt


def reference_seconds(path: str, repeat: int = 3) -> float:
    """Best wall-clock time (s) of ``repeat`` runs of ``iptables-nft-restore --test < path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    exe = _check_env(_tool_for(path))
    return min(restore_once(path, exe=exe) for _ in range(max(1, repeat)))


def _raise_exit(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Time `iptables-nft-restore --test < DUMP` in a throwaway network namespace.")
    ap.add_argument("dump", help="iptables-save dump (e.g. from gen_synthetic.py)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported (default 3)")
    a = ap.parse_args(argv)
    # Turn SIGTERM/SIGHUP into an exception so the throwaway netns is always deleted.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    try:
        exe = _check_env(_tool_for(a.dump))
        times = [restore_once(a.dump, exe=exe) for _ in range(max(1, a.repeat))]
    except ReferenceUnavailable as e:
        print(f"reference: cannot run: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"reference: no such file: {e}", file=sys.stderr)
        return 2
    except RestoreFailed as e:
        print(f"reference: {e}", file=sys.stderr)
        return 1
    runs = ", ".join(f"{t:.3f}" for t in times)
    print(f"{os.path.basename(exe)} --test {a.dump}: best {min(times):.3f}s of {len(times)} (runs: {runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
