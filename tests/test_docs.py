"""The documentation and the packaging: README.md is a front page, docs/ builds strictly with mkdocs, every page is
in the nav and every link resolves, and the version is written once (kptrace/__init__.py) and is what a source
checkout and an installed wheel both report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

# ---------------------------------------------------------------------------------------------------- the version


def _init_version() -> str:
    """__version__ as kptrace/__init__.py writes it (read as text: the one place it is written)."""
    [v] = re.findall(r'^__version__ = "([^"]+)"$', (ROOT / "kptrace/__init__.py").read_text(), re.M)
    return v


def test_the_version_is_written_once_in_kptrace_init():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml must not write the version: kptrace/__init__.py does"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "kptrace/__init__.py"
    import kptrace

    assert kptrace.__version__ == _init_version()


def test_copies_of_the_version_outside_python_follow_it():
    """Files that cannot import it (kustomize image tags, the krew shim's default, the Dockerfile's usage) say the
    same version; tests/test_monitor.py checks the krew manifest."""
    v = _init_version()
    for path in ("deploy/kustomization.yaml", "deploy/deployment/kustomization.yaml"):
        tags = re.findall(r"^\s*newTag:\s*(\S+)", (ROOT / path).read_text(), re.M)
        assert tags and set(tags) == {v}, path
    assert re.findall(r"KPTRACE_VERSION:-([^}]+)}", (ROOT / "deploy/krew/kubectl-kptrace").read_text()) == [v]
    assert set(re.findall(r"kptrace:(\d[\w.]*)", (ROOT / "Dockerfile").read_text())) == {v}


def test_version_from_a_source_checkout():
    res = subprocess.run([sys.executable, "-m", "kptrace", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip() == f"kptrace {_init_version()}", res.stderr


def test_version_from_an_installed_wheel(tmp_path):
    """The wheel's metadata carries __version__, and its installed kptrace (not this checkout's) reports it."""
    pytest.importorskip("hatchling", reason="the test extra installs hatchling (pip install -e '.[test]')")
    dist, target = tmp_path / "dist", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(dist), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    [wheel] = dist.glob("kptrace-*.whl")
    with zipfile.ZipFile(wheel) as z:
        [meta] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        assert re.search(rf"^Version: {re.escape(_init_version())}$", z.read(meta).decode(), re.M)
        assert any(n.startswith("kptrace/grammars/") for n in z.namelist())
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of this checkout's editable install
    where = subprocess.run([sys.executable, "-c", "import kptrace; print(kptrace.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    res = subprocess.run([str(target / "bin/kptrace"), "--version"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 0 and res.stdout.strip() == f"kptrace {_init_version()}", res.stderr
