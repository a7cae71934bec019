"""Shared test helpers.

Tests that need root and network namespaces call :func:`require_netns`. On a laptop without root
they skip with the reason printed; under CI (``CI=true``, as ``.ci/run`` sets) a missing capability
is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "cases"
FIXTURES = ROOT / "fixtures"


def pytest_addoption(parser):
    parser.addoption("--update-snapshots", action="store_true", default=False,
                     help="rewrite the expected-output snapshots of the error cases")


@pytest.fixture
def update_snapshots(request) -> bool:
    return request.config.getoption("--update-snapshots")


def _strict_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("KPTRACE_REQUIRE_NETNS") == "1"


def require_netns(*tools: str) -> None:
    """Skip (laptop) or fail (CI) unless we are root with the given tools and can make a netns."""
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root")
    for t in ("ip", *tools):
        if shutil.which(t) is None:
            problems.append(f"needs {t} on PATH")
    if not problems:
        probe = subprocess.run(["ip", "netns", "add", f"kpt-probe-{os.getpid()}"], capture_output=True, text=True)
        if probe.returncode != 0:
            problems.append(f"cannot create a network namespace: {probe.stderr.strip()}")
        else:
            subprocess.run(["ip", "netns", "del", f"kpt-probe-{os.getpid()}"], capture_output=True)
    if problems:
        reason = "kernel test: " + "; ".join(problems)
        if _strict_ci():
            pytest.fail(reason + " (CI must run these; see .ci/run)")
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped and _strict_ci():
        terminalreporter.write_line(f"CI: {len(skipped)} tests skipped; skips are failures under CI", red=True)


def pytest_sessionfinish(session, exitstatus):
    # Under CI a skip of any kind is a failure: the kernel tests must run there.
    if _strict_ci():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and reporter.stats.get("skipped"):
            session.exitstatus = 1


@pytest.fixture
def run(capsys, monkeypatch):
    """``run(*args, stdin=None) -> (exit code, stdout, stderr)``: the kptrace command as a user runs it, from
    the repository root, wide and without colour; a traceback anywhere fails the test."""
    import io
    import sys

    from kptrace.cli.main import main

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("KUBECONFIG", raising=False)

    def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", type("S", (), {"buffer": io.BytesIO(stdin.encode())})())
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code or 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return _run
