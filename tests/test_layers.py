"""Imports only point down the layers, and no module reaches into another's private names.

The layers, lowest first (the same picture is in ``kptrace/__init__.py``'s docstring). A module may import its own
package and any package of a lower rank; never a higher one, and never a sibling of the same rank::

    rank  package            what it is
    0     errors             the exception tree and diagnostics; imports nothing of kptrace
    1     model              small immutable values (rules, IPVS, nft, cluster, conntrack, source text)
    2     sources | parsers  raw text in (file, SSH, Kubernetes API) | syntax -> model values; neither uses the other
    3     tracer             a packet through the netfilter hooks, kube-proxy's Service views
    4     load               sources + parsers -> one Dataplane (with kube-proxy's standard jumps from tracer)
    5     checks             (dataplane, cluster state) -> findings
    6     render             views of traces and findings (text, JSON, iptables-save)
    7     lab                the kernel-backed checker: loads the rules (written by render) into a network
                             namespace, sends the packets checks predicted, and compares with checks.verify
    8     monitor            the long-running drift monitor (metrics, watches) that cli's `monitor` starts
    9     cli                one module per command: options -> one library call -> render

``kptrace/__init__.py`` is the lazy public facade (it re-exports from several layers inside ``__getattr__``) and
``kptrace/__main__.py`` runs the CLI: both sit above cli. ``from kptrace import __version__`` is allowed anywhere.

Imports inside functions count too: a lazy upward import is still upward. Each offender is printed as file:line.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kptrace"

RANK = {
    "errors": 0,
    "model": 1,
    "sources": 2,
    "parsers": 2,
    "tracer": 3,
    "load": 4,
    "checks": 5,
    "render": 6,
    "lab": 7,
    "monitor": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 10,
}

# Offenders whose fix is under way elsewhere, each with who fixes it: (file, imported module or module.name).
# The lead empties this list when the issue-18 work has landed; an entry that no longer occurs is reported.
ALLOWED: dict[tuple[str, str], str] = {
}


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = _module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "grammars" not in p.parts)


def _imports(path: Path):
    """(line, imported module, names) for every kptrace import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kptrace":
                    yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(path, node)
            if module.split(".")[0] == "kptrace":
                yield node.lineno, module, tuple(a.name for a in node.names)


def _targets(module: str, names: tuple[str, ...]) -> list[str]:
    """The modules an import statement reaches: `from kptrace.tracer import defaults` reaches tracer.defaults."""
    subs = [f"{module}.{n}" for n in names if _is_module(f"{module}.{n}")]
    return subs or [module]


def upward_imports() -> list[str]:
    found = []
    for path in _files():
        here = _layer(_module_of(path))
        rel = path.relative_to(ROOT).as_posix()
        for line, module, names in _imports(path):
            if module == "kptrace" and all(n.startswith("__") for n in names):
                continue  # package metadata (__version__)
            for target in _targets(module, names):
                there = _layer(target)
                if there == here:
                    continue
                if RANK[there] > RANK[here] or (RANK[there] == RANK[here]):
                    why = "a sibling" if RANK[there] == RANK[here] else "a higher layer"
                    found.append(f"{rel}:{line}: {here} (rank {RANK[here]}) imports {target}, {why} "
                                 f"(rank {RANK[there]})")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_reaches() -> list[str]:
    """`from kptrace.x import _y`, and `m._y` where m names another kptrace module, from any other module."""
    found = []
    for path in _files():
        me = _module_of(path)
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> kptrace module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "kptrace" and a.asname:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                module = _resolve(path, node)
                if module.split(".")[0] != "kptrace":
                    continue
                for a in node.names:
                    if _is_module(f"{module}.{a.name}"):
                        aliases[a.asname or a.name] = f"{module}.{a.name}"
                    elif _private(a.name) and module != me:
                        found.append(f"{rel}:{node.lineno}: imports the private {module}.{a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and aliases[node.value.id] != me):
                found.append(f"{rel}:{node.lineno}: reaches the private {aliases[node.value.id]}.{node.attr}")
    return found


def _allowed(offence: str) -> bool:
    rel = offence.split(":", 1)[0]
    return any(rel == f and f" {what}" in offence for f, what in ALLOWED)


def _check(found: list[str], what: str) -> None:
    stale = [f"{f} -> {w} ({who})" for (f, w), who in ALLOWED.items()
             if not any(o.startswith(f + ":") and f" {w}" in o for o in found)]
    if stale and what == "upward":
        warnings.warn("allow-list entries that no longer occur (remove them): " + "; ".join(stale), stacklevel=2)
    left = [o for o in found if not _allowed(o)]
    assert not left, f"{len(left)} {what}:\n" + "\n".join(left)


def test_every_package_has_a_rank():
    layers = {_layer(_module_of(p)) for p in _files()}
    assert layers <= set(RANK), f"packages with no place in the layers: {sorted(layers - set(RANK))}"


def test_imports_only_point_down():
    _check(upward_imports() + private_reaches(), "upward")


def test_the_check_sees_upward_lazy_and_private_imports(tmp_path):
    # the checker itself, on a small package laid out like kptrace: it must find each kind of offence
    global ROOT, PACKAGE
    pkg = tmp_path / "kptrace"
    for d in ("model", "tracer", "checks"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "values.py").write_text("from kptrace.tracer.walk import step\n")
    (pkg / "tracer" / "walk.py").write_text("def step():\n    from kptrace.checks import expected\n")
    (pkg / "checks" / "expected.py").write_text(
        "from kptrace.tracer.walk import _hidden\nfrom kptrace.tracer import walk\nwalk._inner()\n"
        "from . import expected as me\nme._own()\n")
    saved = ROOT, PACKAGE
    ROOT, PACKAGE = tmp_path, pkg
    try:
        up, private = upward_imports(), private_reaches()
    finally:
        ROOT, PACKAGE = saved
    assert up == ["kptrace/model/values.py:1: model (rank 1) imports kptrace.tracer.walk, a higher layer (rank 3)",
                  "kptrace/tracer/walk.py:2: tracer (rank 3) imports kptrace.checks.expected, a higher layer (rank 5)"]
    assert private == ["kptrace/checks/expected.py:1: imports the private kptrace.tracer.walk._hidden",
                       "kptrace/checks/expected.py:3: reaches the private kptrace.tracer.walk._inner"]
