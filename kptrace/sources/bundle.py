"""Node bundles: what a node's data plane is, captured once, readable by every command (``--bundle DIR``).

Layout (one directory per node)::

    DIR/
      meta.json            node name, time, kernel, iptables version and backend, kube-proxy mode, what was skipped
      iptables-save.txt    iptables-save -c
      ip6tables-save.txt   ip6tables-save -c
      ipset-save.txt       ipset save                 (when ipset exists)
      ipvsadm-save.txt     ipvsadm-save -n            (when ipvsadm exists)
      ipvsadm-Ln.txt       ipvsadm -Ln --stats        (when ipvsadm exists)
      nft-tables.txt       nft list tables            (when nft exists)
      nft-ruleset.nft      nft list ruleset           (nftables mode, or nft tables iptables-save cannot show)
      nft-ruleset.json     nft -j list ruleset        (with nft-ruleset.nft)
      ip-addr.json         ip -j addr
      ip-route.json        ip -j route
      ip6-route.json       ip -6 -j route
      conntrack.txt        conntrack -L               (when conntrack exists: the IPv4 table)
      conntrack6.txt       conntrack -L -f ipv6       (the IPv6 table)

A bundle is written into a temporary directory beside DIR and renamed into place, so a crash never
leaves a half bundle that looks whole. Only read-only commands ever run on a node.

The kube-proxy mode (meta.json ``kube_proxy_mode``, and ``kube_proxy_mode_from``: how it was told) is
kube-proxy's own configuration when its process can be found on the node (the ``mode`` of its
``--config`` file, which makes its flags ignored; else ``--proxy-mode``), else what the tables show:
``table ip|ip6 kube-proxy`` is nftables mode, IPVS virtual services IPVS mode, KUBE-SERVICES iptables mode.

The nft ruleset is saved (text and JSON) when kube-proxy runs in nftables mode or ``nft list tables``
shows any table that iptables-save does not hold (kube-proxy's, a CNI's ``table inet flannel``): those
decide verdicts too. On a node whose only nft tables are iptables-nft's, it would be a second copy of
iptables-save.txt, lossier (``xt`` expressions) and as large (a 10k-Service node: ~50 MB more), so it is
left out, and meta.json says so. Readers load the text form (the JSON when the text is missing or cut
short), with iptables-save: the loader reads iptables-nft's tables from iptables-save, not twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

from kptrace.errors import EnvironmentProblem, InputError

__all__ = ["BUNDLE_COMMANDS", "Bundle", "LocalRunner", "NFT_COMMANDS", "collect", "read_bundle", "write_bundle"]

BUNDLE_VERSION = 1


@dataclass(frozen=True, slots=True)
class BundleCommand:
    file: str
    argv: tuple[str, ...]
    required: bool = False


#: Read-only, every one of them. A missing optional tool is normal (no ipvsadm on an iptables-mode node).
BUNDLE_COMMANDS: tuple[BundleCommand, ...] = (
    # required unless the node's rules are all in nft (collect checks after the nft commands)
    BundleCommand("iptables-save.txt", ("iptables-save", "-c")),
    BundleCommand("ip6tables-save.txt", ("ip6tables-save", "-c")),
    BundleCommand("ipset-save.txt", ("ipset", "save")),
    BundleCommand("ipvsadm-save.txt", ("ipvsadm-save", "-n")),
    BundleCommand("ipvsadm-Ln.txt", ("ipvsadm", "-Ln", "--stats")),
    BundleCommand("nft-tables.txt", ("nft", "list", "tables")),
    BundleCommand("ip-addr.json", ("ip", "-j", "addr"), required=True),
    BundleCommand("ip-route.json", ("ip", "-j", "route")),
    BundleCommand("ip6-route.json", ("ip", "-6", "-j", "route")),
    # the connection-tracking tables (conntrack -L lists IPv4 only), for stale entries (`kptrace conntrack`);
    # listing them changes nothing
    BundleCommand("conntrack.txt", ("conntrack", "-L")),
    BundleCommand("conntrack6.txt", ("conntrack", "-L", "-f", "ipv6")),
)
#: Run after BUNDLE_COMMANDS when the node needs them (see the module's docstring): text first, the form read.
NFT_COMMANDS: tuple[BundleCommand, ...] = (
    BundleCommand("nft-ruleset.nft", ("nft", "list", "ruleset")),
    BundleCommand("nft-ruleset.json", ("nft", "-j", "list", "ruleset")),
)
_ALL_FILES = tuple(c.file for c in (*BUNDLE_COMMANDS, *NFT_COMMANDS))
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
        """(name, text) of the rule dumps to load: iptables-save and ip6tables-save, and the nft ruleset in
        one of its two forms (they are one ruleset: loading both would be two copies of every table)."""
        out = []
        for name in ("iptables-save.txt", "ip6tables-save.txt"):
            text = self.files.get(name, "")
            if text.strip() and ("*" in text):
                out.append((self._name(name), text))
        nft = self.nft_form()
        if nft is not None:
            out.append((self._name(nft), self.files[nft]))
        return out

    def nft_form(self) -> str | None:
        """Which saved form of the nft ruleset to read: the text listing, or the JSON when the text is
        missing or cut short (a whole listing ends with its last table's closing brace) and the JSON is whole.

        >>> Bundle({"nft-ruleset.nft": "table ip t {\\n\\tchain c {\\n", "nft-ruleset.json": '{"nftables": []}'}, {}).nft_form()
        'nft-ruleset.json'
        """
        text = self.files.get("nft-ruleset.nft", "")
        if text.strip() and text[-4096:].rstrip().rsplit("\n", 1)[-1] == "}":
            return "nft-ruleset.nft"
        js = self.files.get("nft-ruleset.json", "")
        if js.strip():
            try:
                json.loads(js)
            except json.JSONDecodeError:
                pass
            else:
                if text.strip():
                    self.notes.append(f"{self._name('nft-ruleset.nft')} is cut short: the nft ruleset is read from nft-ruleset.json")
                return "nft-ruleset.json"
        # Neither is whole: the text, whose reader says what is missing and where.
        return "nft-ruleset.nft" if text.strip() else ("nft-ruleset.json" if js.strip() else None)

    def _name(self, file: str) -> str:
        return os.path.join(self.path, file) if self.path else f"{self.meta.get('node', 'node')}:{file}"


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


#: kube-proxy's process, found by its name: its PID on one line, then its command line as /proc holds it
#: (NUL-separated). Shell builtins and cat only: kube-proxy's image has little else. Exit 3: no such process.
_FIND_KUBE_PROXY = ('for p in /proc/[0-9]*; do read -r c < "$p/comm" 2>/dev/null || continue; '
                    '[ "$c" = kube-proxy ] || continue; echo "${p#/proc/}"; cat "$p/cmdline" && exit 0; done; exit 3')
_YAML_MODE = re.compile(r"""^mode:[ \t]*["']?([A-Za-z]*)["']?[ \t]*(?:#.*)?$""", re.M)
_JSON_MODE = re.compile(r'"mode"\s*:\s*"([A-Za-z]*)"')
_NFT_TABLE = re.compile(r"^table (\S+) (\S+)", re.M)
_SAVE_TABLE = re.compile(r"^\*(\w+)", re.M)


def _reason(res: CommandResult) -> str:
    return "not installed" if res.rc == 127 else (res.stderr.strip().splitlines() or [f"exit {res.rc}"])[-1]


def _flag(args: list[str], name: str) -> str | None:
    """``--name=value`` or ``--name value`` from a command line; the last one wins, as in pflag."""
    value = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(name + "="):
            value = a[len(name) + 1:]
    return value


def configured_mode(runner) -> tuple[str, str]:
    """kube-proxy's mode as its own configuration on the node says: ``(mode, how it was told)``, or
    ``("", why it cannot be told)``. The ``mode`` of its ``--config`` file (kube-proxy ignores its flags
    when it has one), else its ``--proxy-mode`` flag. The file is read through ``/proc/PID/root``, so a
    path inside kube-proxy's container resolves from the host too. An unset mode is kube-proxy's default,
    which changes between releases: then the tables tell."""
    def run(argv: tuple[str, ...]) -> CommandResult:
        try:
            return runner.run(argv)
        except EnvironmentProblem as e:  # sudo allowed for the rule dumps only: the mode is then the tables'
            return CommandResult(1, "", e.message)

    res = run(("sh", "-c", _FIND_KUBE_PROXY))
    if res.rc == 3:
        return "", "no kube-proxy process on the node"
    if res.rc != 0:
        return "", f"kube-proxy's command line not read: {_reason(res)}"
    pid, _, cmdline = res.stdout.partition("\n")
    args = cmdline.rstrip("\0\n").split("\0")
    config = _flag(args, "--config")
    if config:
        res = run(("cat", f"/proc/{pid.strip()}/{'root' if config.startswith('/') else 'cwd/'}{config}"))
        if res.rc != 0:
            return "", f"kube-proxy's --config {config} not read: {_reason(res)}"
        m = _YAML_MODE.search(res.stdout) or _JSON_MODE.search(res.stdout)
        if m and m.group(1):
            return m.group(1).lower(), f"kube-proxy's --config {config}"
        return "", f"kube-proxy's --config {config} leaves mode unset (kube-proxy's default)"
    mode = _flag(args, "--proxy-mode")
    if mode:
        return mode.lower(), "kube-proxy's --proxy-mode"
    return "", "kube-proxy runs without --config or --proxy-mode (kube-proxy's default)"


def _kube_proxy_mode(files: dict[str, str]) -> str:
    """The mode the node's tables show: kube-proxy's nft table, IPVS virtual services, or its iptables chains."""
    if any(name == "kube-proxy" and fam in ("ip", "ip6") for fam, name in _NFT_TABLE.findall(files.get("nft-tables.txt", ""))):
        return "nftables"
    nft = files.get("nft-ruleset.json", "")  # bundles written before nft-tables.txt
    if '"kube-proxy"' in nft and "service-ips" in nft:
        return "nftables"
    ipvs = files.get("ipvsadm-save.txt", "") + files.get("ipset-save.txt", "")
    if "KUBE-CLUSTER-IP" in ipvs or ipvs.strip().startswith("-A -"):
        return "ipvs"
    if "KUBE-SVC-" in files.get("iptables-save.txt", "") or "KUBE-SERVICES" in files.get("iptables-save.txt", ""):
        return "iptables"
    return "unknown"


def _tables_iptables_save_lacks(files: dict[str, str]) -> list[str]:
    """``nft list tables`` entries of the families kptrace traces (ip, ip6, inet) that are not iptables-nft's
    copies of what iptables-save.txt and ip6tables-save.txt hold: kube-proxy's table, a CNI's or firewalld's.
    (ebtables-nft's ``bridge`` and arptables-nft's ``arp`` tables alone are no reason to save the ruleset.)"""
    held = {("ip", t) for t in _SAVE_TABLE.findall(files.get("iptables-save.txt", ""))}
    held |= {("ip6", t) for t in _SAVE_TABLE.findall(files.get("ip6tables-save.txt", ""))}
    return [f"{fam} {name}" for fam, name in _NFT_TABLE.findall(files.get("nft-tables.txt", ""))
            if fam in ("ip", "ip6", "inet") and (fam, name) not in held]


def collect(runner, node: str | None = None, *, progress: Callable[[str], None] | None = None) -> Bundle:
    """Run the bundle's read-only commands through ``runner`` (``run(argv) -> CommandResult``) and tell the
    kube-proxy mode. A tool missing on the node, or refused, is a note; only a node without its addresses,
    or without any rules (neither iptables-save nor nft), is an error."""
    files: dict[str, str] = {}
    notes: list[str] = []
    skipped: dict[str, str] = {}

    def run(cmd: BundleCommand) -> bool:
        if progress:
            progress(" ".join(cmd.argv))
        res = runner.run(cmd.argv)
        if res.rc == 0:
            files[cmd.file] = res.stdout
            return True
        if cmd.required:
            raise EnvironmentProblem(f"{runner.name}: `{' '.join(cmd.argv)}` failed: {_reason(res)}",
                                     hint="kptrace needs the node's rules (iptables-save or nft) and its addresses")
        skipped[cmd.file] = _reason(res)
        notes.append(f"{' '.join(cmd.argv)}: {_reason(res)}; skipped")
        return False

    for cmd in BUNDLE_COMMANDS:
        run(cmd)
    if progress:
        progress("kube-proxy's mode")
    configured, told = configured_mode(runner)
    from_tables = _kube_proxy_mode(files)
    mode, mode_from = (configured, told) if configured else (from_tables, f"the node's tables; {told}")
    if configured and from_tables not in ("unknown", configured):
        notes.append(f"{told} says {configured} mode, but the tables are kube-proxy's {from_tables} mode's "
                     f"(left over from another mode, or kube-proxy has not synced yet)")
    incomplete = None
    others = _tables_iptables_save_lacks(files)
    if "nft-tables.txt" in files and (mode == "nftables" or others):
        for cmd in NFT_COMMANDS:
            run(cmd)
        if not any(c.file in files for c in NFT_COMMANDS) and mode == "nftables":
            incomplete = f"kube-proxy runs in nftables mode, but its ruleset was not saved: {skipped['nft-ruleset.nft']}"
    elif "nft-tables.txt" in files:
        skipped["nft-ruleset.nft"] = skipped["nft-ruleset.json"] = \
            "nft holds only iptables-nft's tables, which iptables-save.txt holds (without nft's xt placeholders)"
    elif mode == "nftables":
        incomplete = f"kube-proxy runs in nftables mode, but nft did not run: {skipped.get('nft-tables.txt', '?')}"
    if incomplete:
        notes.append(incomplete)
    if "iptables-save.txt" not in files and not any(c.file in files for c in NFT_COMMANDS):
        nft_reason = skipped.get("nft-ruleset.nft") or skipped.get("nft-tables.txt") or "no nft tables"
        raise EnvironmentProblem(f"{runner.name}: `iptables-save -c` failed: {skipped.get('iptables-save.txt', '?')}, "
                                 f"and there is no nft ruleset either ({nft_reason})",
                                 hint="kptrace needs the node's rules: iptables-save (iptables and IPVS modes) or nft "
                                      "(nftables mode), run as root or through sudo -n")
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
        "kube_proxy_mode": mode,
        "kube_proxy_mode_from": mode_from,
        "nft_tables": [f"{fam} {name}" for fam, name in _NFT_TABLE.findall(files.get("nft-tables.txt", ""))],
        "skipped": skipped,
    }
    if incomplete:
        meta["incomplete"] = incomplete
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
    for name in _ALL_FILES:
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            with open(p) as f:
                files[name] = f.read()
    return Bundle(files, meta, path=directory)


@dataclass(frozen=True, slots=True)
class NodeResult:
    name: str
    path: str | None
    error: str | None
    notes: tuple[str, ...] = ()
    mode: str = ""  # kube-proxy's mode, and how it was told
    mode_from: str = ""
    incomplete: str | None = None  # collected, but without what its mode needs (nftables mode without nft)


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
            return NodeResult(name, path, None, tuple(bundle.notes), bundle.meta["kube_proxy_mode"],
                              bundle.meta["kube_proxy_mode_from"], bundle.meta.get("incomplete"))
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
