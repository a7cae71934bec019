"""Node bundles: what a node's data plane is, captured once, readable by every command (``--bundle DIR``).

Layout (one directory per node)::

    DIR/
      meta.json            node name, time, kernel, iptables version and backend, kube-proxy mode, what was skipped
      iptables-save.txt    iptables-save -c
      ip6tables-save.txt   ip6tables-save -c
      ipset-save.txt       ipset save                 (when ipset exists)
      ipvsadm-save.txt     ipvsadm-save -n            (when ipvsadm exists)
      ipvsadm-Ln.txt       ipvsadm -Ln --stats        (when ipvsadm exists)
      nft-ruleset.json     nft -j list ruleset        (when nft exists)
      ip-addr.json         ip -j addr
      ip-route.json        ip -j route
      ip6-route.json       ip -6 -j route

A bundle is written into a temporary directory beside DIR and renamed into place, so a crash never
leaves a half bundle that looks whole. Only read-only commands ever run on a node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from kptrace.errors import EnvironmentProblem, InputError

__all__ = ["BUNDLE_COMMANDS", "Bundle", "LocalRunner", "collect", "read_bundle", "write_bundle"]

BUNDLE_VERSION = 1


@dataclass(frozen=True, slots=True)
class BundleCommand:
    file: str
    argv: tuple[str, ...]
    required: bool = False


#: Read-only, every one of them. A missing optional tool is normal (no ipvsadm on an iptables-mode node).
BUNDLE_COMMANDS: tuple[BundleCommand, ...] = (
    BundleCommand("iptables-save.txt", ("iptables-save", "-c"), required=True),
    BundleCommand("ip6tables-save.txt", ("ip6tables-save", "-c")),
    BundleCommand("ipset-save.txt", ("ipset", "save")),
    BundleCommand("ipvsadm-save.txt", ("ipvsadm-save", "-n")),
    BundleCommand("ipvsadm-Ln.txt", ("ipvsadm", "-Ln", "--stats")),
    BundleCommand("nft-ruleset.json", ("nft", "-j", "list", "ruleset")),
    BundleCommand("ip-addr.json", ("ip", "-j", "addr"), required=True),
    BundleCommand("ip-route.json", ("ip", "-j", "route")),
    BundleCommand("ip6-route.json", ("ip", "-6", "-j", "route")),
)
_META_COMMANDS = {"kernel": ("uname", "-r"), "iptables": ("iptables", "--version"), "hostname": ("hostname",)}


@dataclass(frozen=True, slots=True)
class CommandResult:
    rc: int  # 127: not found
    stdout: str
    stderr: str


class LocalRunner:
    """Runs the bundle's commands on this machine, as root or through ``sudo -n`` (never prompting)."""

    name = "local"

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.prefix: tuple[str, ...] = ()
        if os.geteuid() != 0:
            if shutil.which("sudo") is None:
                raise EnvironmentProblem("--local needs root to read the node's rules, and there is no sudo",
                                         hint="run kptrace as root")
            self.prefix = ("sudo", "-n")

    def run(self, argv: tuple[str, ...]) -> CommandResult:
        if shutil.which(argv[0]) is None:
            return CommandResult(127, "", f"{argv[0]}: command not found")
        try:
            res = subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return CommandResult(124, "", f"{' '.join(argv)}: no answer in {self.timeout:.0f} s")
        if res.returncode != 0 and self.prefix and "password is required" in res.stderr:
            raise EnvironmentProblem(f"sudo would prompt for a password to run {argv[0]}",
                                     hint=f"run kptrace as root, or allow `sudo -n {' '.join(argv)}` for this user")
        return CommandResult(res.returncode, res.stdout, res.stderr)


@dataclass(slots=True)
class Bundle:
    files: dict[str, str]
    meta: dict
    path: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def node_ips(self) -> list[str]:
        return node_addresses(self.files.get("ip-addr.json", "[]"))

    @property
    def routes(self) -> list[dict]:
        out: list[dict] = []
        for name in ("ip-route.json", "ip6-route.json"):
            try:
                out.extend(json.loads(self.files.get(name) or "[]"))
            except json.JSONDecodeError:
                pass
        return out

    @property
    def interfaces(self) -> dict[str, list[str]]:
        """Interface -> its global addresses as "addr/prefixlen", primary first (as ``ip -j addr`` lists them)."""
        try:
            links = json.loads(self.files.get("ip-addr.json") or "[]")
        except json.JSONDecodeError:
            return {}
        return {link.get("ifname", ""): [f"{a['local']}/{a.get('prefixlen', 32)}" for a in link.get("addr_info", [])
                                         if "local" in a and a.get("scope") == "global"] for link in links}

    def dumps(self) -> list[tuple[str, str]]:
        """(name, text) of the rule dumps to load."""
        out = []
        for name in ("iptables-save.txt", "ip6tables-save.txt"):
            text = self.files.get(name, "")
            if text.strip() and ("*" in text):
                out.append((os.path.join(self.path, name) if self.path else f"{self.meta.get('node', 'node')}:{name}", text))
        return out


def node_addresses(ip_addr_json: str) -> list[str]:
    """The node's own addresses from ``ip -j addr``: every global address (kube-ipvs0's too)."""
    try:
        links = json.loads(ip_addr_json or "[]")
    except json.JSONDecodeError:
        return []
    out = []
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("scope") == "global" and a.get("local"):
                out.append(a["local"])
    return out


def _kube_proxy_mode(files: dict[str, str]) -> str:
    nft = files.get("nft-ruleset.json", "")
    if '"kube-proxy"' in nft and "service-ips" in nft:
        return "nftables"
    ipvs = files.get("ipvsadm-save.txt", "") + files.get("ipset-save.txt", "")
    if "KUBE-CLUSTER-IP" in ipvs or ipvs.strip().startswith("-A -"):
        return "ipvs"
    if "KUBE-SVC-" in files.get("iptables-save.txt", "") or "KUBE-SERVICES" in files.get("iptables-save.txt", ""):
        return "iptables"
    return "unknown"


def collect(runner, node: str | None = None, *, progress: Callable[[str], None] | None = None) -> Bundle:
    files: dict[str, str] = {}
    notes: list[str] = []
    skipped: dict[str, str] = {}
    for cmd in BUNDLE_COMMANDS:
        if progress:
            progress(" ".join(cmd.argv))
        res = runner.run(cmd.argv)
        if res.rc == 0:
            files[cmd.file] = res.stdout
            continue
        reason = "not installed" if res.rc == 127 else (res.stderr.strip().splitlines() or [f"exit {res.rc}"])[-1]
        if cmd.required:
            raise EnvironmentProblem(f"{runner.name}: `{' '.join(cmd.argv)}` failed: {reason}",
                                     hint="kptrace needs the node's iptables-save output and its addresses")
        skipped[cmd.file] = reason
        notes.append(f"{' '.join(cmd.argv)}: {reason}; skipped")
    meta_values = {}
    for key, argv in _META_COMMANDS.items():
        res = runner.run(argv)
        meta_values[key] = res.stdout.strip() if res.rc == 0 else ""
    ipt = meta_values.get("iptables", "")
    meta = {
        "version": BUNDLE_VERSION,
        "node": node or meta_values.get("hostname") or runner.name,
        "source": runner.name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": meta_values.get("kernel", ""),
        "iptables": ipt,
        "iptables_backend": "nft" if "nf_tables" in ipt else ("legacy" if "legacy" in ipt else "unknown"),
        "kube_proxy_mode": _kube_proxy_mode(files),
        "skipped": skipped,
    }
    return Bundle(files, meta, notes=notes)


def write_bundle(bundle: Bundle, directory: str) -> str:
    """Write atomically: into a temporary directory beside ``directory``, then rename it into place."""
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(directory):
        raise InputError(f"{directory} already exists", hint="give a new directory, or remove the old bundle first")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.partial-", dir=parent)
    try:
        for name, text in bundle.files.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(bundle.meta, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle.path = directory
    return directory


def read_bundle(directory: str) -> Bundle:
    meta_path = os.path.join(directory, "meta.json")
    if os.path.isfile(directory):
        raise InputError(f"{directory}: is a file, not a bundle directory",
                         hint="a bundle is the directory `kptrace collect` writes (meta.json, iptables-save.txt, ...); "
                              "to read one dump file, pass it with --dump FILE")
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: no such bundle directory", hint="make one with `kptrace collect --local -o DIR`")
    if not os.path.isfile(meta_path):
        raise InputError(f"{directory}: not a kptrace bundle (no meta.json)",
                         hint="a bundle is written whole by `kptrace collect`; a directory without meta.json is not one")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{meta_path}:{e.lineno}:{e.colno}: {e.msg}", hint="the bundle's meta.json is damaged") from None
    files = {}
    for cmd in BUNDLE_COMMANDS:
        p = os.path.join(directory, cmd.file)
        if os.path.isfile(p):
            with open(p) as f:
                files[cmd.file] = f.read()
    return Bundle(files, meta, path=directory)


@dataclass(frozen=True, slots=True)
class NodeResult:
    name: str
    path: str | None
    error: str | None
    notes: tuple[str, ...] = ()


def collect_many(targets: list[tuple[str, Callable[[], object]]], out_dir: str, *, parallel: int = 16,
                 progress: Callable[[NodeResult], None] | None = None) -> list[NodeResult]:
    """Collect ``(name, make_runner)`` targets into ``out_dir/<name>``, ``parallel`` at a time. A node that
    fails is reported and the others go on."""
    from concurrent.futures import ThreadPoolExecutor

    from kptrace.errors import KptraceError

    def one(name: str, make_runner) -> NodeResult:
        runner = None
        try:
            runner = make_runner()
            bundle = collect(runner, name)
            path = write_bundle(bundle, os.path.join(out_dir, name))
            return NodeResult(name, path, None, tuple(bundle.notes))
        except KptraceError as e:
            return NodeResult(name, None, e.render())
        except Exception as e:  # one node's surprise must not stop the other 4,999
            return NodeResult(name, None, f"{name}: {type(e).__name__}: {e}")
        finally:
            close = getattr(runner, "close", None)
            if close:
                close()

    results: list[NodeResult] = []
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [pool.submit(one, name, make) for name, make in targets]
        for f in futures:
            r = f.result()
            results.append(r)
            if progress:
                progress(r)
    return results
