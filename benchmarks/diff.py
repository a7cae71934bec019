#!/usr/bin/env python3
"""`kptrace diff` of two 10,000-Service snapshots against loading both (issue 14's target: <= 2x).

Before: a synthetic node (10,000 Services x 10 endpoints; iptables-save from gen_synthetic.py, and the
nft listing from gen_nft.py in both layouts). After: the same text with CHANGED Services' first endpoint
taken out (as kube-proxy's next sync writes it after a pod went away). Measured in one process, the
best of --repeat runs: loading both (the reference) and loading both + diffing them (what `kptrace diff A B`
does), as a ratio.

    python3 benchmarks/diff.py [--services 10000] [--changed 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def _edit_iptables(text: str, changed: int) -> str:
    """Drop the first KUBE-SEP jump of the first CHANGED KUBE-SVC chains."""
    out, done, seen = [], 0, set()
    for line in text.split("\n"):
        m = re.match(r"-A (KUBE-SVC-\S+) .*-j KUBE-SEP-", line)
        if m and done < changed and m.group(1) not in seen:
            seen.add(m.group(1))
            done += 1
            continue
        out.append(line)
    return "\n".join(out)


def _edit_nft(text: str, changed: int) -> str:
    """Drop numgen value 0 of the first CHANGED service chains (classic: vmap; 1.37: dnat map)."""
    out, done = [], 0
    for line in text.split("\n"):
        m = re.match(r"(\s*(?:meta l4proto \w+ dnat ip to )?numgen random mod )(\d+)( (?:vmap|map) \{ )0 : [^,]+, (.*)$", line)
        if m and done < changed and int(m.group(2)) > 1:
            n = int(m.group(2)) - 1
            rest = re.sub(r"(\d+) : ", lambda k: f"{int(k.group(1)) - 1} : ", m.group(4))
            line = f"{m.group(1)}{n}{m.group(3)}{rest}"
            done += 1
        out.append(line)
    return "\n".join(out)


def _measure(before: str, after: str, repeat: int) -> tuple[float, float, int]:
    from kptrace.checks.diff import diff_dataplanes
    from kptrace.load import load_dumps

    best_load = best_diff = float("inf")
    changes = 0
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        load_dumps([before])
        load_dumps([after])
        best_load = min(best_load, time.perf_counter() - t)
        gc.collect()
        t = time.perf_counter()
        r = diff_dataplanes(load_dumps([before]), load_dumps([after]))
        best_diff = min(best_diff, time.perf_counter() - t)
        changes = len({c.service for c in r.changes})
    return best_load, best_diff, changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    import gen_nft
    import gen_synthetic

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inputs = {
            "iptables-save": ("\n".join(gen_synthetic.generate(a.services, 10)) + "\n", _edit_iptables),
            "nft list, classic": (gen_nft.generate(a.services, 10, layout="classic", form="list"), _edit_nft),
            "nft list, 1.37": (gen_nft.generate(a.services, 10, layout="1.37", form="list"), _edit_nft),
        }
        for label, (text, edit) in inputs.items():
            b = os.path.join(tmp, "before")
            af = os.path.join(tmp, "after")
            with open(b, "w") as f:
                f.write(text)
            with open(af, "w") as f:
                f.write(edit(text, a.changed))
            load, diff, changes = _measure(b, af, a.repeat)
            rows.append((label, load, diff, changes))
    print(f"{'input':20} {'load both':>10} {'diff':>10} {'ratio':>7}  changed Service ports found (of {a.changed})")
    ok = True
    for label, load, diff, changes in rows:
        ratio = diff / load
        ok = ok and ratio <= 2.0 and changes == a.changed
        print(f"{label:20} {load:9.2f}s {diff:9.2f}s {ratio:6.2f}x  {changes}")
    print("target: diff <= 2x loading both, every changed port found:", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
