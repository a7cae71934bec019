"""Text as people paste it (issue 12): the corpus in fixtures/pasted/, one test per file, and the pre-pass
every reader shares (kptrace/parsers/paste.py).

Each corpus file has a sidecar ``<name>.expect.toml``, written by reading the text, that says what kptrace
must read from it::

    reader = "dump"          # "dump" (default): detected and read as `kptrace parse` does; "cluster-state"
    format = "ipvsadm"       # what detect_format says of the text
    lenient = false          # read as --lenient (kptrace parse) does
    notes = ["..."]          # each is part of a note kptrace gives
    diagnostics = [{ severity, line, col, message }]   # all of them, at the original file's positions
    [ipvs]     services = ["TCP 10.0.0.1:80", ...] (in order) | virtual_services = N;  real_servers = N;  truncated
    [ipsets]   sets = { NAME = members shown };  truncated = [NAME, ...]
    [iptables] tables = [...];  chains = { "table/CHAIN" = rules }   (0: the chain is not there or is empty)
    [cluster]  services = N;  slices = N;  nodes = N
    [error]    location = "file:line:col";  message;  quoted (the original line);  hint = ["...", ...]

``fixtures/pasted/iptables/`` holds the iptables-save and listing cases, which need the paste pre-pass
hooked into those readers and the load (fixtures/pasted/README.md says which).
"""

from __future__ import annotations

import doctest
import importlib.util
import time
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

import kptrace.parsers.detect
import kptrace.parsers.paste
import kptrace.parsers.shell
from kptrace.errors import Diagnostic, InputError, KptraceError, ParseError, format_diagnostic
from kptrace.model.source import SourceText
from kptrace.parsers.detect import FORMATS, READ_FORMATS, detect_format, formats_read
from kptrace.parsers.ipset import parse_ipset
from kptrace.parsers.ipvsadm import parse_ipvsadm
from kptrace.parsers.paste import clean_paste, split_dumps
from kptrace.parsers.shell import command_families

CORPUS = ROOT / "fixtures" / "pasted"
_NOT_CASES = {"README.md", "make_pasted.py"}


def _cases(sub: str) -> list[Path]:
    return sorted(p for p in (CORPUS / sub).iterdir() if not p.name.endswith(".expect.toml") and p.name not in _NOT_CASES)


def _rel(p: Path) -> str:
    return str(p.relative_to(CORPUS))


# ---------------------------------------------------------------- the corpus

def _check(path: Path) -> None:
    expect = tomllib.loads(path.with_name(path.name + ".expect.toml").read_text())
    text = path.read_bytes().decode()  # as it is: CRLF and all
    name = str(path.relative_to(ROOT))
    lenient = expect.get("lenient", False)
    if "format" in expect:
        assert detect_format(text) == expect["format"]
    if expect.get("reader", "dump") == "cluster-state":
        from kptrace.parsers.cluster_state import parse_cluster_state

        read = lambda: parse_cluster_state(text, name)  # noqa: E731
    else:
        from kptrace.load import load_texts

        read = lambda: load_texts([SourceText(name, text)], lenient=lenient, full=True)  # noqa: E731
    if "error" in expect:
        _check_refused(expect["error"], read, text)
        return
    result = read()
    notes = list(getattr(result, "notes", ()))
    for note in expect.get("notes", ()):
        assert any(note in n for n in notes), (note, notes)
    diags = list(getattr(result, "diagnostics", ()))
    if "diagnostics" in expect:
        got = [(d.severity, d.line, d.col) for d in diags]
        assert got == [(d["severity"], d["line"], d["col"]) for d in expect["diagnostics"]], [format_diagnostic(d) for d in diags]
        for d, e in zip(diags, expect["diagnostics"]):
            assert e["message"] in d.message
    else:
        assert not [d for d in diags if d.severity == "error"], "\n".join(format_diagnostic(d) for d in diags)
    _quotes_the_original(diags, text)
    if "ipvs" in expect:
        _check_ipvs(result.ipvs, expect["ipvs"])
    if "ipsets" in expect:
        _check_ipsets(result.ipsets, expect["ipsets"])
    if "iptables" in expect:
        _check_iptables(result, expect["iptables"])
    if "cluster" in expect:
        c = expect["cluster"]
        assert (len(result.services), len(result.slices), len(result.nodes)) == (c["services"], c["slices"], c["nodes"])


def _check_refused(e: dict, read, text: str) -> None:
    with pytest.raises(KptraceError) as caught:
        read()
    err = caught.value
    assert isinstance(err, ParseError), err.render()
    d = err.diagnostics[0]
    rendered = format_diagnostic(d)
    assert rendered.startswith(f"{e['location']}: error: "), rendered
    assert e["message"] in d.message
    assert d.text == e["quoted"] and "^" in rendered
    for h in e.get("hint", ()):
        assert h in d.hint, d.hint
    _quotes_the_original([d], text)


def _quotes_the_original(diags: list[Diagnostic], text: str) -> None:
    """A diagnostic quotes the original file's line at its position (prompts, fences, quote markers and
    colour codes taken away from the text read change neither)."""
    lines = text.replace("\r\n", "\n").split("\n")
    for d in diags:
        if d.text and d.line:
            original = lines[d.line - 1].replace("\x1b", "␛")
            assert d.text.replace("\t", " ").replace("\xa0", " ") == original.replace("\t", " ").replace("\xa0", " "), (d, original)


def _check_ipvs(table, e: dict) -> None:
    assert table is not None, "no IPVS table read"
    if "services" in e:
        assert [f"{vs.protocol} {vs.endpoint}" for vs in table] == e["services"]
    if "virtual_services" in e:
        assert len(table.virtual_services) == e["virtual_services"]
    assert sum(len(vs.real_servers) for vs in table) == e["real_servers"]
    if "truncated" in e:
        assert table.truncated == e["truncated"]


def _check_ipsets(sets, e: dict) -> None:
    assert sets is not None, "no ipsets read"
    assert {s.name: len(s.members) for s in sets} == e["sets"]
    assert sorted(s.name for s in sets if s.truncated) == sorted(e.get("truncated", ()))


def _check_iptables(dp, e: dict) -> None:
    rs = dp.rulesets.get(4)
    assert rs is not None, "no iptables rules read"
    assert sorted(rs.tables) == sorted(e["tables"])
    for key, n in e["chains"].items():
        table, chain = key.split("/", 1)
        c = rs.tables[table].chains.get(chain)
        assert (len(c.raw) if c is not None else 0) == n, key


@pytest.mark.parametrize("path", _cases("ipvsadm") + _cases("ipset") + _cases("cluster"), ids=_rel)
def test_pasted(path):
    _check(path)


def test_every_corpus_file_has_its_expectations_and_make_pasted_rewrites_the_variants(tmp_path):
    for sub in ("ipvsadm", "ipset", "cluster", "iptables"):
        for p in (CORPUS / sub).iterdir():
            pair = p.with_name(p.name.removesuffix(".expect.toml")) if p.name.endswith(".expect.toml") else p.with_name(p.name + ".expect.toml")
            assert pair.exists(), f"{p} has no {pair.name}"
    spec = importlib.util.spec_from_file_location("make_pasted", CORPUS / "make_pasted.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = tmp_path
    module.main()
    made = sorted(tmp_path.rglob("*.*"))
    assert made
    for p in made:
        assert p.read_bytes() == (CORPUS / p.relative_to(tmp_path)).read_bytes(), p.relative_to(tmp_path)


# ---------------------------------------------------------------- the pre-pass

@pytest.mark.parametrize("line,command", [
    ("[root@vm01 ~]# ipvsadm -L -n", "ipvsadm -L -n"),
    ("user@kmaster:~$ sudo ipvsadm -ln", "sudo ipvsadm -ln"),
    ("root@iptables-control-plane:/# iptables-save", "iptables-save"),
    ("$ kubectl exec -n kube-system kube-proxy-x -- iptables-save", "kubectl exec -n kube-system kube-proxy-x -- iptables-save"),
    ("kubectl exec -n kube-system kube-proxy-x -- iptables-save", "kubectl exec -n kube-system kube-proxy-x -- iptables-save"),
    (" # ipvsadm -ln", "ipvsadm -ln"),
    ("# nft list ruleset", "nft list ruleset"),
    ("node1:~ # iptables-save", "iptables-save"),
    ("(venv) me@laptop ~ % ipset list", "ipset list"),
    # '#' starts a comment in iptables-save and nft: only '# <a command kptrace knows>' is a prompt
    ("# Generated by iptables-save v1.8.4 on Tue Sep  8 13:26:56 2020", None),
    ("# Warning: iptables-legacy tables present, use iptables-legacy-save to see them", None),
    ("# Completed on Tue Sep  8 13:26:56 2020", None),
    ("-A KUBE-SERVICES -m comment --comment \"ns/svc:http -> $HOME\" -j KUBE-SVC-X", None),
    ("TCP  10.96.0.1:443 rr", None),
    ("  -> 192.168.0.2:6443             Masq    1      3          1", None),
    ("Name: KUBE-CLUSTER-IP", None),
])
def test_prompt_forms(line, command):
    p = clean_paste(line + "\n*nat\nCOMMIT\n", "x")
    commands = [s.command for s in p.segments]
    if command is None:
        assert p.text.split("\n")[0] == line and not commands
    else:
        assert p.text.split("\n")[0] == "" and commands == [command]


@pytest.mark.parametrize("line", ["...", "....", "…", "[...]", "[…]", "(...)", "<snip>", "[snip]", "-- snip --",
                                  "# ...", "... 120 more lines ...", "   ..."])
def test_elision_forms(line):
    p = clean_paste(f"TCP  10.0.0.1:80 rr\n{line}\nUDP  10.0.0.1:53 rr\n", "x")
    assert p.elisions == (2,) and p.text.split("\n")[1] == ""


def test_a_clean_dump_comes_back_as_it_was_and_fast():
    """The fast path: a 400,000-line iptables-save has none of a paste's marks, and costs less than one pass
    of ``str.splitlines`` over it (a ratio in the same process, not a wall-clock bound: machines are noisy;
    on an idle one it is ~15 ms against ~25 ms)."""
    rule = '-A KUBE-SEP-AAAABBBBCCCCDDDD -p tcp -m comment --comment "ns/svc-{}:http" -m tcp -j DNAT --to-destination 10.244.{}.7:8080\n'
    text = "# Generated by iptables-save v1.8.9 on Tue Dec  2 14:00:00 2025\n*nat\n" + "".join(
        rule.format(i, i % 250) for i in range(400_000)) + "COMMIT\n# Completed on Tue Dec  2 14:00:00 2025\n"
    best = min(_timed(lambda: clean_paste(text, "big")) for _ in range(3))
    p = clean_paste(text, "big")
    assert p.text is text and not p.notes and not p.segments and not p.elisions
    reference = min(_timed(lambda: text.splitlines()) for _ in range(3))
    assert best < 1.5 * reference, f"{best:.3f} s against splitlines' {reference:.3f} s"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_positions_point_at_the_original_line_and_column():
    # a nested quote and a colour code move the line's start: the error is still at the original's line:col
    text = "> > IP Virtual Server version 1.2.1 (size=4096)\n> > \x1b[1mTCP\x1b[0m  10.0.0.1:80 rr bogus\n"
    with pytest.raises(ParseError) as caught:
        parse_ipvsadm(text, "mail.txt")
    d = caught.value.diagnostics[0]
    original = text.split("\n")[1]
    assert (d.line, d.text) == (2, original.replace("\x1b", "␛"))
    assert original[d.col - 1:].startswith("bogus"), (d.col, original)


def test_several_dumps_in_one_paste_split_for_their_readers():
    text = (CORPUS / "iptables" / "mixed-save-then-ipvsadm.txt").read_text()
    paste = clean_paste(text, "mixed.txt")
    ipvs_at = text.split("\n").index("IP Virtual Server version 1.2.1 (size=4096)") + 1
    assert [(s.family, s.start) for s in paste.segments] == [("iptables-save", 2), ("ipvsadm", ipvs_at)]
    parts = split_dumps(text)
    assert [detect_format(p) for p in parts] == ["iptables-save", "ipvsadm"]
    assert all(len(p.split("\n")) <= len(text.split("\n")) for p in parts)
    # each part keeps its lines where they were, for the positions its reader gives
    table = parse_ipvsadm(parts[1], "mixed.txt")
    assert table.virtual("tcp", "10.96.0.10", 53).location.line == text.split("\n").index("TCP  10.96.0.10:53 rr") + 1
    # another command's output goes with the dump it is pasted among; its reader leaves it out, and says so
    parts = split_dumps("$ ipvsadm -Ln\nTCP  10.0.0.1:80 rr\n$ kubectl get pods\nNAME  READY\n$ ipset save\n"
                        "create S hash:ip family inet\n")
    assert [p.count("\n") for p in parts] == [4, 6] and parts[1].startswith("\n\n\n\n$ ipset save")
    t = parse_ipvsadm(parts[0], "p.txt")
    assert len(t) == 1 and any("line 4: the output of `kubectl get pods`, which kptrace skips" in n for n in t.notes)
    # the ipvsadm reader given the whole paste reads its part and says what it left to the others
    whole = parse_ipvsadm(text, "mixed.txt")
    assert len(whole.virtual_services) == 2
    assert any(f"lines 2-{ipvs_at - 1}: the output of `iptables-save -t nat; ipvsadm -Ln`, which is not ipvsadm output" in n
               for n in whole.notes), whole.notes


def test_a_pipe_through_grep_marks_the_output_partial():
    p = clean_paste("$ sudo ipset list | grep -A8 KUBE-NODE-PORT-TCP\nName: KUBE-NODE-PORT-TCP\nType: bitmap:port\n"
                    "Revision: 3\nHeader: range 0-65535\nSize in memory: 216\nReferences: 1\nNumber of entries: 1\nMembers:\n31080\n", "x")
    assert p.filtered == ("grep -A8 KUBE-NODE-PORT-TCP",) and p.partial
    sets = parse_ipset("$ sudo ipset list | grep -A8 KUBE-NODE-PORT-TCP\nName: KUBE-NODE-PORT-TCP\nType: bitmap:port\n"
                       "Members:\n31080\n", "x")
    assert sets["KUBE-NODE-PORT-TCP"].truncated
    assert any("went through `grep -A8 KUBE-NODE-PORT-TCP`" in n for n in sets.notes)


def test_command_families():
    assert command_families("sudo iptables -t nat -L -n -v") == (["iptables-list"], [])
    assert command_families("ip6tables-legacy-save -c") == (["iptables-save"], [])
    assert command_families("docker exec kind-control-plane ipset save") == (["ipset"], [])
    assert command_families("kubectl get svc,endpointslices,nodes -A -o json") == (["cluster-state"], [])
    assert command_families("kubectl get pods") == ([None], [])
    assert command_families("ssh node1 sudo nft list ruleset | head -50") == (["nft"], ["head -50"])


@pytest.mark.parametrize("module", [kptrace.parsers.paste, kptrace.parsers.shell, kptrace.parsers.detect])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- detection says what it tried

def test_detection_sees_through_a_paste():
    assert detect_format("[root@vm01 ~]# ipvsadm -L -n\nTCP  10.1.109.187:443 rr\n") == "ipvsadm"
    assert detect_format("```console\n$ sudo ipset list\nName: KUBE-CLUSTER-IP\nType: hash:ip,port\n```\n") == "ipset"
    assert detect_format("> *nat\n> :PREROUTING ACCEPT [0:0]\n> COMMIT\n") == "iptables-save"
    assert detect_format("\x1b[32mroot@n1\x1b[0m:~# ipvsadm -Ln\nIP Virtual Server version 1.2.1 (size=4096)\n") == "ipvsadm"
    # only the command line says what it is (an empty IPVS table): its tool
    assert detect_format("$ ipvsadm-save -n\n$ \n") == "ipvsadm"


def test_the_cannot_tell_hint_names_only_what_is_read():
    """FORMATS names ip-addr (recognised, refused); the hint lists READ_FORMATS only, so it says no more than
    kptrace reads, and grows when a reader is added there (nft was, with nftables mode)."""
    assert "ip-addr" in FORMATS and "ip-addr" not in READ_FORMATS and "nft" in READ_FORMATS
    d = kptrace.parsers.detect.cannot_tell("$ kubectl get pods\nNAME   READY\n", "pods.txt")
    assert (d.line, d.col, d.text) == (2, 1, "NAME   READY")
    assert "ip addr" not in d.hint and formats_read() in d.hint
    assert d.hint.endswith("run `iptables-save` (or `nft list ruleset`, `ipvsadm -Ln`, `ipset save`) on the node and pass its output")


def test_the_ipvsadm_reader_names_another_format_at_its_line():
    text = "[root@vm01 ~]# ipset save\ncreate KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n"
    with pytest.raises(ParseError) as caught:
        parse_ipvsadm(text, "x.txt")
    d = caught.value.diagnostics[0]
    assert (d.line, d.col) == (2, 1) and "this is `ipset save` output, not ipvsadm output" in d.message


# ---------------------------------------------------------------- wrong hints (issue 12)

def test_a_bundle_that_is_a_file_says_so(tmp_path):
    from kptrace.sources.bundle import read_bundle

    f = tmp_path / "node1.rules"
    f.write_text("*nat\nCOMMIT\n")
    with pytest.raises(InputError) as caught:
        read_bundle(str(f))
    assert caught.value.message == f"{f}: is a file, not a bundle directory"
    assert "--dump FILE" in caught.value.hint
    with pytest.raises(InputError) as caught:
        read_bundle(str(tmp_path / "nope"))
    assert "no such bundle directory" in caught.value.message


# ---------------------------------------------------------------- iptables (last: see fixtures/pasted/README.md)

@pytest.mark.parametrize("path", _cases("iptables"), ids=_rel)
def test_pasted_iptables(path):
    """iptables-save and `iptables -L` as pasted. These need the paste pre-pass hooked into the iptables-save
    and listing readers, and the load to split several dumps (fixtures/pasted/README.md says how)."""
    _check(path)


@pytest.mark.parametrize("how", ["prompts", "cat", "cat-without-comments"])
def test_an_ipv4_and_an_ipv6_dump_in_one_text_are_each_their_family(how, tmp_path):
    """`iptables-save; ip6tables-save` pasted as one text, or two dumps cat'ed into one file (with or without their
    `# Generated by` lines): each dump is read as its own family, as the two files are, and a note says where
    each is; never one family holding the other's rules."""
    from kptrace.load import load_dumps

    samples = ROOT / "fixtures" / "samples"
    v4, v6 = (samples / "yaobank-modern.rules").read_text(), (samples / "yaobank-modern.rules6").read_text()
    text = {"prompts": "$ sudo iptables-save\n" + v4 + "$ sudo ip6tables-save\n" + v6, "cat": v4 + v6,
            "cat-without-comments": "".join(x for x in (v4 + v6).splitlines(True) if not x.startswith("#"))}[how]
    both = tmp_path / "both.txt"
    both.write_text(text)
    dp = load_dumps([str(both)])
    apart = load_dumps([str(samples / "yaobank-modern.rules"), str(samples / "yaobank-modern.rules6")])

    def shape(rs):
        return {(t, c): len(chain) for t, table in rs.tables.items() for c, chain in table.chains.items()}

    assert sorted(dp.rulesets) == [4, 6]
    for fam in (4, 6):
        assert shape(dp.rulesets[fam]) == shape(apart.rulesets[fam]), fam
        assert any(f"read as the IPv{fam} dump" in n for n in dp.rulesets[fam].notes)


@pytest.mark.parametrize("indent", ["  ", "\t", "    "])
def test_a_paste_indented_on_every_line_reads_as_the_dump(indent, tmp_path):
    """A dump pasted with every line indented (a mail, a ticket, a code block in a markdown list) reads as the dump
    does, a note says the indent was taken away, and a problem is still pointed at in the original line."""
    from kptrace.load import load_dumps

    dump = ROOT / "fixtures" / "samples" / "bootcamp.rules"
    lines = dump.read_text().splitlines()
    pasted = tmp_path / "pasted.txt"
    pasted.write_text("".join(indent + x + "\n" for x in lines))
    shape = {4: None}
    for path in (dump, pasted):
        rs = load_dumps([str(path)]).rulesets[4]
        got = {(t, c): len(chain) for t, table in rs.tables.items() for c, chain in table.chains.items()}
        assert shape[4] is None or got == shape[4]
        shape[4] = got
    assert any("indent" in n and "taken away" in n for n in load_dumps([str(pasted)]).rulesets[4].notes)
    n = next(i for i, x in enumerate(lines) if "--comment" in x and x.startswith("-A"))
    lines[n] = lines[n].replace("--comment", "--coment", 1)
    pasted.write_text("".join(indent + x + "\n" for x in lines))
    d = next(d for d in load_dumps([str(pasted)], full=True, lenient=True).rulesets[4].diagnostics if "--coment" in d.message)
    assert d.line == n + 1 and d.text == indent + lines[n] and d.col == len(indent) + lines[n].index("--coment") + 1
