"""The gates CI holds the code to: ruff and mypy, each configured in pyproject.toml, run as the developer would.

Both run from the interpreter running the suite (``python -m ruff``, ``python -m mypy``), so the versions are
the ones the ``test`` extra installs; each test fails with the tool's own report (file:line:col and the rule).
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.fail(f"{tool} is not installed beside {sys.executable}: pip install -e '.[test]'")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    res = _run("ruff", "check", "--no-cache", "--output-format", "concise", "kptrace", "tests", "benchmarks")
    assert res.returncode == 0, f"ruff check kptrace tests benchmarks:\n{res.stdout}{res.stderr}"


def test_mypy_finds_nothing():
    # the configuration ([tool.mypy] in pyproject.toml) names the package and the modules still being cleaned
    res = _run("mypy")
    assert res.returncode == 0, f"mypy:\n{res.stdout}{res.stderr}"


def _kernel_tests(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Tests that reach conftest's require_netns: directly, through a helper of the file, or through a fixture."""
    tree = ast.parse(path.read_text(), str(path))
    funcs: dict[str, tuple[ast.FunctionDef | ast.AsyncFunctionDef, set[str], set[str]]] = {}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            calls = {c.func.id for c in ast.walk(n) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
            funcs[n.name] = (n, calls, {a.arg for a in n.args.args})
    kernel = {name for name, (_, calls, _) in funcs.items() if "require_netns" in calls}
    grew = True
    while grew:
        before = len(kernel)
        kernel |= {name for name, (_, calls, args) in funcs.items() if (calls | args) & kernel}
        grew = len(kernel) > before
    return [funcs[name][0] for name in sorted(kernel) if name.startswith("test_")]


def _marked_netns(path: Path, test: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    module = ast.parse(path.read_text(), str(path))
    for n in module.body:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets):
            if "pytest.mark.netns" in ast.unparse(n.value):
                return True
    return any(ast.unparse(d).startswith("pytest.mark.netns") for d in test.decorator_list)


def test_every_kernel_test_is_marked_netns():
    # so that `pytest -m "not netns"` runs none of them (pyproject declares the marker)
    unmarked = [f"{p.relative_to(ROOT)}:{t.lineno}: {t.name}" for p in sorted((ROOT / "tests").glob("test_*.py"))
                for t in _kernel_tests(p) if not _marked_netns(p, t)]
    assert not unmarked, "kernel tests without @pytest.mark.netns (or a module pytestmark):\n" + "\n".join(unmarked)
