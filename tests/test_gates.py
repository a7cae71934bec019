"""The gates CI holds the code to: ruff and mypy, each configured in pyproject.toml, run as the developer would.

Both run from the interpreter running the suite (``python -m ruff``, ``python -m mypy``), so the versions are
the ones the ``test`` extra installs; each test fails with the tool's own report (file:line:col and the rule).
"""

from __future__ import annotations

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
