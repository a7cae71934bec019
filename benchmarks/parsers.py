#!/usr/bin/env python3
"""The iptables readers' speed against the least any reader does, in the same process: a ``str.split`` pass
over the same text (``for line in text.split("\\n"): line.split()``). Only the ratios mean something on a
shared machine; CPU time, best of ``--repeat``, the cyclic GC paused as a load runs (``load_texts``).

Rows: the synthetic 10k-Service node (``gen_synthetic.py``, ~434,000 lines) read by ``parse_iptables_save``;
its nat table as ``iptables -t nat -L -n -v`` prints it (``fixtures/listings/format_listing.py``, ~656,000
lines) read by ``parse_iptables_list``; and every rule parsed (the lazy rule parser and the listing's
translation): the 1k-Service node's dump and the listing's first 60,000 lines.

    python3 benchmarks/parsers.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "fixtures" / "listings")]

from kptrace.model.source import SourceText  # noqa: E402
from kptrace.parsers.iptables_save import parse_iptables_save  # noqa: E402
from kptrace.parsers.listing import parse_iptables_list  # noqa: E402

OUT = HERE / "out"


def _dump(services: int) -> str:
    from gen_synthetic import generate

    OUT.mkdir(exist_ok=True)
    path = OUT / f"node-{services}x10.rules"  # the file benchmarks/run.py makes, if it is there
    if not path.exists():
        path.write_text("".join(line + "\n" for line in generate(services, 10, 10)))
    return path.read_text()


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        result = fn()
        best = min(best, time.process_time() - t)
        del result
    return best


def _split_pass(text: str) -> None:
    for line in text.split("\n"):
        line.split()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (best taken)")
    args = ap.parse_args(argv)
    from format_listing import listing

    dump, small = _dump(10_000), _dump(1_000)
    nat = listing(dump)
    part = "\n".join(nat.split("\n")[:60_000]) + "\n"
    rows = (
        ("iptables-save, 10k Services", dump, lambda: parse_iptables_save(SourceText("d", dump), lenient=True)),
        ("iptables -L -n -v (nat), 10k", nat, lambda: parse_iptables_list(nat, "l", lenient=True)),
        ("every rule, iptables-save 1k", small,
         lambda: list(parse_iptables_save(SourceText("d", small), lenient=True).ruleset.iter_rules())),
        ("every rule, listing 60k lines", part, lambda: list(parse_iptables_list(part, "l", lenient=True).ruleset.iter_rules())),
    )
    gc.disable()
    for name, text, fn in rows:
        ref = _best(lambda text=text: _split_pass(text), args.repeat)
        took = _best(fn, args.repeat)
        print(f"{name:32s} {took:7.3f} s   str.split {ref:6.3f} s   {took / ref:6.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
