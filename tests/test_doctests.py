"""Every `>>>` example in the package runs, and says what it shows (style: docstrings with examples a test runs).

The modules are found by their text, so a new module with examples is tested without being listed here.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((ROOT / "kptrace").rglob("*.py")):
        if ">>>" in path.read_text():
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


@pytest.mark.parametrize("name", MODULES)
def test_examples_run_and_pass(name, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples name fixtures by their path in the checkout
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{name} has '>>>' but no docstring example doctest can find"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
    skipped = all(ex.options.get(doctest.SKIP) for t in tests for ex in t.examples)
    assert result.attempted > 0 or skipped, f"no example of {name} ran"


def test_the_examples_are_found():
    # a guard on the discovery itself: these modules have examples today
    assert {"kptrace.model.kube", "kptrace.model.addr", "kptrace.errors", "kptrace.tracer.matchers"} <= set(MODULES)
