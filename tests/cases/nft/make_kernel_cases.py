"""Regenerate tests/cases/nft/kernel/: what nft prints for each nftables input we test with.

    sudo python3 tests/cases/nft/make_kernel_cases.py

For each input it makes a throwaway network namespace, loads the ruleset with ``nft -f`` and saves
``nft list ruleset`` (NAME.list), ``nft -a list ruleset`` (NAME.list-a) and ``nft -j list ruleset``
(NAME.json). Inputs:

* ``src/*.nft``: loaded as they are (they are written in an order nft accepts);
* ``fixtures/upstream/*.nft`` (kube-proxy's unit-test expectations): their lines are in the test's
  sorted order, which ``nft -f`` refuses (a rule jumps to a chain added later), so they are loaded as
  ``kptrace.model.nft.format_nft`` writes them (tables, chains, sets, elements, then rules);
* ``iptables-nft-yaobank``: ``fixtures/samples/yaobank-modern.rules`` loaded with
  ``iptables-nft-restore`` (without its ``-m nfacct`` rule: this kernel has no xt_nfacct), and the
  listing saved with stderr, where nft 1.0.x writes its ``# Warning: table ip nat is managed by
  iptables-nft`` lines.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from kptrace.model.nft import format_nft  # noqa: E402
from kptrace.parsers.nft import parse_nft_text  # noqa: E402

NS = "kptrace-nftcases"


def sh(*args: str, input: str | None = None, stderr: bool = False) -> str:
    """Run in the namespace; ``stderr``: with stderr in its place among stdout's lines, as a terminal shows it."""
    cmd = ["ip", "netns", "exec", NS, *args]
    if stderr:
        cmd = ["sh", "-c", " ".join(cmd) + " 2>&1"]
    r = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def save(name: str, *, listing_with_stderr: bool = False) -> None:
    out = HERE / "kernel"
    out.mkdir(exist_ok=True)
    (out / f"{name}.list").write_text(sh("nft", "list", "ruleset", stderr=listing_with_stderr))
    (out / f"{name}.list-a").write_text(sh("nft", "-a", "list", "ruleset"))
    (out / f"{name}.json").write_text(sh("nft", "-j", "list", "ruleset") + "\n")
    print("wrote", name)


def main() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for src in sorted((HERE / "src").glob("*.nft")):
            sh("nft", "flush", "ruleset")
            sh("nft", "-f", str(src))
            save(src.stem)
        for src in sorted((ROOT / "fixtures" / "upstream").glob("*.nft")):
            sh("nft", "flush", "ruleset")
            sh("nft", "-f", "-", input=format_nft(parse_nft_text(src.read_text(), str(src))))
            save("upstream-" + src.stem)
        sh("nft", "flush", "ruleset")
        rules = (ROOT / "fixtures" / "samples" / "yaobank-modern.rules").read_text()
        sh("iptables-nft-restore", input="\n".join(line for line in rules.splitlines() if "nfacct" not in line) + "\n")
        save("iptables-nft-yaobank", listing_with_stderr=True)
    finally:
        subprocess.run(["ip", "netns", "del", NS])


if __name__ == "__main__":
    main()
