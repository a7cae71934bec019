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
    docs = "\n".join(p.read_text() for p in (README, *DOCS.rglob("*.md")))
    shown = re.findall(r"kptrace:(\d[\w.]*\w)", docs) + re.findall(r'kptrace_build_info\{version="([^"]+)"', docs)
    assert shown and set(shown) == {v}, "README and docs/ show another version"


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


# ---------------------------------------------------------------------------------------------------- README.md


def _fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """Every fenced code block of a markdown text: (info string, its lines)."""
    return [(m.group(1), m.group(2).split("\n")) for m in re.finditer(r"^```(\w*)\n(.*?)\n```$", text, re.M | re.S)]


def test_readme_is_a_front_page_under_10_kb():
    size = len(README.read_bytes())
    assert size < 10 * 1024, f"README.md is {size} bytes: move reference text into docs/"
    headings = re.findall(r"^## (.+)$", README.read_text(), re.M)
    for h in ("Quick start", "Install", "Pictures", "Documentation"):
        assert h in headings, h


def test_quick_start_is_the_first_block_of_two_lines_and_ci_runs_the_second():
    text = README.read_text()
    info, lines = _fenced_blocks(text)[0]
    assert text.index("## Quick start") < text.index("```"), "the quick start is the first fenced block"
    assert len(lines) == 2, lines
    first, second = lines
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd ", "export "))]
    assert ci == [second], ".ci/run must run exactly the quick start's second line"
    # the first line's kptrace command works and says what the quick start promises
    _, _, command = first.partition(" && .venv/bin/kptrace ")
    assert command.startswith("svc "), first
    res = subprocess.run([sys.executable, "-m", "kptrace", *command.split()], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "yaobank/summary" in res.stdout


#: Commands the README shows that need root or run forever: their outputs were copied from a real run by hand.
_NOT_RUN = ("sudo ", "kptrace monitor ", "curl ")


def _commands_and_outputs(lines: list[str]) -> list[tuple[str, list[str]]]:
    """A console block's `$ command` lines (with `\\` continuations) and the output lines shown under each."""
    runs: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            cmd = lines[i][2:]
            while cmd.endswith("\\"):
                i += 1
                cmd = cmd[:-1] + lines[i].strip()
            runs.append((re.sub(r"\s+#.*$", "", cmd).strip(), []))
        elif runs:
            runs[-1][1].append(lines[i])
        i += 1
    return runs


def _readme_examples() -> list[tuple[str, list[str]]]:
    out = []
    for info, lines in _fenced_blocks(README.read_text()):
        if info == "console":
            out += [(c, o) for c, o in _commands_and_outputs(lines) if not c.startswith(_NOT_RUN)]
    return out


def test_readme_shows_an_example_of_every_command():
    from kptrace.cli.main import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert len(commands) >= 9, commands
    shown = {m.group(1) for info, lines in _fenced_blocks(README.read_text()) if info == "console"
             for line in lines for m in [re.match(r"\$ (?:sudo )?kptrace (\w+)", line)] if m}
    assert commands <= shown, f"README lacks an example of {sorted(commands - shown)}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


_DRIVER = """
import contextlib, io, json, sys
from kptrace.cli.main import main
results = {}
for command in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(command.split()[1:])
        except SystemExit:
            pass
    results[command] = out.getvalue() + "\\n" + err.getvalue()
json.dump(results, sys.__stdout__)
"""


@pytest.fixture(scope="module")
def terminal():
    """``terminal("kptrace ARGS") -> what it prints``, stdout then stderr, as a terminal of 100 columns shows it
    (rich's own terminal mode, without colour; escapes removed). Every example command runs in one fresh process:
    a process each costs ~1 s, and this suite's own process has state other tests leave behind."""
    import json

    commands = sorted({c for c, _ in _readme_examples()} | {c for _, c, _ in _docs_examples()})
    env = {**os.environ, "COLUMNS": "100", "FORCE_COLOR": "1", "NO_COLOR": "1"}
    res = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps(commands), capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    printed = json.loads(res.stdout)
    return lambda command: _ANSI.sub("", printed[command])


@pytest.mark.parametrize("command, shown", _readme_examples(), ids=lambda x: x.split()[1] if isinstance(x, str) else "")
def test_readme_examples_are_real_output(command, shown, terminal):
    """Every line the README shows under a command (but `...`) is a line the command prints now, as a terminal of
    100 columns shows it, so no output there is invented or stale. When this fails, run the command again in such a
    terminal (`COLUMNS=100 FORCE_COLOR=1 NO_COLOR=1 kptrace ...`, escapes removed) and paste its output."""
    want = [line.rstrip() for line in shown if line.strip() and line.strip() != "..."]
    assert want, command
    printed = {line.rstrip() for line in terminal(command).splitlines()}
    stale = [line for line in want if line not in printed]
    assert not stale, f"README's output of `{command}` has lines it no longer prints: {stale[:3]}"


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """The anchor mkdocs' toc gives a heading (its default slugify)."""
    text = re.sub(r"[`*_]", "", heading)
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_readme_links_resolve():
    links = _LINK.findall(README.read_text())
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if re.match(r"\w+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.exists(), f"README links to {link}, which does not exist"
        if anchor:
            assert target.suffix == ".md", link
            slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", target.read_text(), re.M)}
            assert anchor in slugs, f"README links to {link}: {path} has no heading with that anchor"


# ---------------------------------------------------------------------------------------------------- docs/


def _nav_pages(nav) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _mkdocs_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    nav = _nav_pages(_mkdocs_config()["nav"])
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, f"not in the nav: {sorted(set(pages) - set(nav))}; missing: {sorted(set(nav) - set(pages))}"
    assert len(nav) == len(set(nav))


def test_mkdocs_builds_strictly(tmp_path):
    """Broken links, anchors that no heading makes, and pages left out of the nav fail the build."""
    pytest.importorskip("mkdocs", reason="the test extra installs mkdocs (pip install -e '.[test]')")
    config = _mkdocs_config()
    assert set(config["validation"].values()) == {"warn"}  # with --strict, every one of these fails the build
    # never -q: it hides the warnings that --strict counts, and the build passes whatever is broken
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site/commands/packet/index.html").exists()


def test_mkdocs_strict_build_fails_on_a_broken_link(tmp_path):
    """The strict build is a real gate: the same config with one page linking to a page that does not exist fails."""
    pytest.importorskip("mkdocs", reason="the test extra installs mkdocs (pip install -e '.[test]')")
    import shutil

    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "docs/exit-codes.md").write_text((DOCS / "exit-codes.md").read_text() + "\n[gone](no-such-page.md)\n")
    (tmp_path / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text())
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0 and "no-such-page.md" in res.stdout + res.stderr


def test_collect_page_lists_every_command_a_bundle_runs():
    from kptrace.sources.bundle import BUNDLE_COMMANDS, NFT_COMMANDS

    page = " ".join((DOCS / "commands/collect.md").read_text().split())
    for c in (*BUNDLE_COMMANDS, *NFT_COMMANDS):
        assert f"`{' '.join(c.argv)}`" in page, c
        assert c.file in page, c.file


_JSON_EXAMPLE = re.compile(r"<!-- kptrace-json: (.+?) -->\n```json\n(.*?)\n```", re.S)
#: Objects whose keys are data (Service names, finding kinds), not fields.
_MAPS = {("by_service",), ("by_service", "*", "endpoints"), ("summary", "by_kind")}


def _fields(doc, path=()) -> set[tuple[str, ...]]:
    """Every field path of a JSON document, lists read through (their elements' fields), maps by their values."""
    out = set()
    if isinstance(doc, dict):
        if path in _MAPS:
            return {path + ("*",)} | {f for v in doc.values() for f in _fields(v, path + ("*",))}
        for k, v in doc.items():
            out |= {path + (k,)} | _fields(v, path + (k,))
    elif isinstance(doc, list):
        for v in doc:
            out |= _fields(v, path)
    return out


_EXAMPLES = _JSON_EXAMPLE.findall((DOCS / "json.md").read_text())


def test_json_page_has_an_example_of_every_schema():
    import json

    schemas = {json.loads(body)["schema"] for _, body in _EXAMPLES}
    assert schemas == {"kptrace/trace/v1", "kptrace/service/v1", "kptrace/parse/v1", "kptrace/drift/v1",
                       "kptrace/diff/v1", "kptrace/conntrack/v1"}


@pytest.mark.parametrize("command, body", _EXAMPLES, ids=[c.split()[1] for c, _ in _EXAMPLES])
def test_json_page_shows_the_fields_each_command_prints(command, body, run):
    import json

    shown = json.loads(body)
    _, out, _ = run(*command.split()[1:])
    real = json.loads(out)
    assert real["schema"] == shown["schema"]
    undocumented, gone = _fields(real) - _fields(shown), _fields(shown) - _fields(real)
    assert not undocumented, f"docs/json.md lacks these fields of `{command}`: {sorted(undocumented)[:8]}"
    assert not gone, f"docs/json.md shows fields `{command}` no longer prints: {sorted(gone)[:8]}"


_REPO_PATH = re.compile(r"(?<![\w/.-])((?:kptrace|tests|benchmarks|fixtures|grammars|deploy|scripts|docs)/[\w./*-]*\w)")


def test_paths_the_docs_name_exist():
    """A file or folder the README, docs/ or CONTRIBUTING.md names is there: when code moves, its docs move with it."""
    texts = {p: p.read_text() for p in (README, ROOT / "CONTRIBUTING.md", *DOCS.rglob("*.md"))}
    named = {(p.relative_to(ROOT), m) for p, text in texts.items() for m in _REPO_PATH.findall(text)}
    assert len(named) > 50
    missing = sorted((str(p), m) for p, m in named
                     if not re.search(r"/v\d+$|NAME", m)  # JSON schema names, placeholders
                     and not any(ROOT.glob(m)))
    assert not missing, f"named in the docs but not in the repository: {missing[:10]}"


_WORD = re.compile(r"[^\s\u2500-\u257f]+")  # words between whitespace and box-drawing characters
_ELIDED = ("...", "\u2026")


def _docs_examples() -> list[tuple[str, str, list[str]]]:
    """Console examples in docs/ that run on files of this repository: (page, command, lines shown)."""
    out = []
    for page in sorted(DOCS.rglob("*.md")):
        for info, lines in _fenced_blocks(page.read_text()):
            if info != "console":
                continue
            for command, shown in _commands_and_outputs(lines):
                args = command.split()
                if args[0] != "kptrace" or args[1] in ("monitor", "collect", "verify") or "|" in args or "..." in args:
                    continue  # needs root, a node or a terminal session
                if any((re.search(r"\.[a-z][\w-]*$", a) or a.startswith(("fixtures/", "tests/", "./", "snap/")))
                       and not (ROOT / a).exists() for a in args[2:]):
                    continue  # an input that is not in the repository (a user's own file)
                if any(line.strip() and line.strip() not in _ELIDED for line in shown):
                    out.append((str(page.relative_to(DOCS)), command, shown))
    return out


@pytest.mark.parametrize("page, command, shown", _docs_examples(), ids=[f"{p}:{c.split()[1]}" for p, c, _ in _docs_examples()])
def test_docs_examples_are_real_output(page, command, shown, terminal):
    """Every word a docs/ page shows under a command is one that command prints now (words that an elision cut,
    with `...`, aside). Words, not lines: the pages keep output abridged, and a table's layout follows the terminal."""
    want = [line for line in shown if line.strip() and line.strip() not in _ELIDED]
    assert want, (page, command)
    printed = set(_WORD.findall(terminal(command)))
    stale = [(line.strip(), word) for line in want for word in _WORD.findall(line)
             if word not in printed and not any(e in word for e in _ELIDED)]
    assert not stale, f"docs/{page}: the output of `{command}` has words it no longer prints: {stale[:5]}"


def test_contributing_names_code_that_exists():
    """In CONTRIBUTING.md's "How to add" part, each `Class.method`, `function` or `TABLE` a paragraph names is defined in
    a file that paragraph names, so a newcomer lands on the right line."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    part = text[text.index("## How to add"):text.index("## Tests")]
    checked = 0
    for para in re.split(r"\n(?=\* |\d\. |#)|\n\n", part):
        files = [ROOT / f for f in re.findall(r"`(kptrace/[\w/]+\.py)`", para) if "NAME" not in f]
        names = [n for n in re.findall(r"`([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)?)`", para)
                 if (n[0].isupper() or n.startswith("_") or "." in n) and not re.search(r"\.(yml|md|toml|py|json)$", n)]
        if not files:
            continue
        sources = "\n".join(f.read_text() for f in files)
        for name in names:
            last = name.split(".")[-1]
            assert re.search(rf"^\s*(?:def|class) {last}\b|^\s*{last}\s*[:=]", sources, re.M), \
                f"CONTRIBUTING.md names `{name}` beside {[str(f.relative_to(ROOT)) for f in files]}, which do not define it"
            checked += 1
    assert checked >= 10, checked
