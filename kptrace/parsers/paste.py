"""Read text as people paste it: one pre-pass every reader shares, so each format's parser sees only its tool's output.

Text copied from a terminal, an issue, a chat or a blog post carries more than the tool printed.
:func:`clean_paste` recognises it and blanks or removes it, and says what it skipped:

* shell prompts and the command line before the output (``$ ``, ``[root@h ~]# ``, ``user@h:~$ sudo ...``,
  ``root@node:/# ``, ``kubectl exec ... -- iptables-save``; ``# `` only before a command it knows, since
  ``#`` starts a comment in iptables-save and nft), and a bare prompt (usually the last line);
* elision lines (``...``, ``[...]``, ``…``, ``<snip>``): blanked and listed in ``elisions``, because what they
  stand for is unknown, not absent: a reader must say so ("the text was elided at line N: ... may be missing");
* markdown code fences (the prose outside them too), ``> `` quote markers (nested ones as well), CRLF line
  endings, tabs, non-breaking spaces (U+00A0, U+202F) and ANSI colour codes;
* several dumps one after another: ``segments`` say where each command's output is and which tool printed it
  (from its command line, or from the output's first line when one command line ran several tools).

Positions stay the original file's. Every line stays where it was (a skipped line becomes an empty one), so
line numbers need no mapping; a line whose start moved (a quote marker, a colour code) keeps a column map,
and :meth:`PasteMap.restore` turns a reader's diagnostic back into one at the original ``line:col`` with the
original line quoted.

>>> p = clean_paste("[root@vm01 ~]# ipvsadm -L -n\\r\\nTCP  10.1.109.187:443 rr\\r\\n...\\r\\n[root@vm01 ~]# ", "x.txt")
>>> p.text.split("\\n")
['', 'TCP  10.1.109.187:443 rr', '', '']
>>> p.elisions, [(s.family, s.command) for s in p.segments]
((3,), [('ipvsadm', 'ipvsadm -L -n')])
>>> print("\\n".join(p.notes))
x.txt:1: skipped the prompt and command line `ipvsadm -L -n`
x.txt: read as pasted text: skipped a bare shell prompt (line 4); CRLF line endings read as LF

A clean dump costs one quick look (a 47 MB iptables-save: a few milliseconds) and comes back as it was:

>>> clean_paste("*nat\\n-A KUBE-SERVICES -j KUBE-NODEPORTS\\nCOMMIT\\n").text == "*nat\\n-A KUBE-SERVICES -j KUBE-NODEPORTS\\nCOMMIT\\n"
True
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import NamedTuple

from kptrace.errors import Diagnostic
from kptrace.parsers.shell import Segment, segments

__all__ = ["Paste", "PasteMap", "clean_paste", "split_dumps"]

# ---------------------------------------------------------------- what pasted text looks like

#: The commands a ``# `` prompt may stand before (``#`` alone starts a comment in iptables-save and nft).
_KNOWN = (r"(?:sudo[ \t]+(?:-\S+[ \t]+)*)?(?:\S*/)?"
          r"(?:ip6?tables(?:-legacy|-nft)?(?:-save)?|ipvsadm(?:-save)?|ipset|nft|kubectl|oc|conntrack|crictl|docker|"
          r"nerdctl|cat|ip|ssh|watch)(?![\w-])")
#: The commands a line may hold with no prompt before it (never the first word of a line these tools print).
_KNOWN_BARE = (r"(?:sudo[ \t]+(?:-\S+[ \t]+)*)?(?:\S*/)?"
               r"(?:ip6?tables(?:-legacy|-nft)?-save|ipvsadm(?:-save)?|ipset|nft|kubectl|conntrack|crictl|docker|sudo)(?![\w-])")
_PROMPT = re.compile(
    r"[ \t]*(?:\([^)\n]*\)[ \t]*)?"                      # (venv)
    r"(?:\[[^\]\n]{1,100}\][#$%]"                          # [root@vm01 ~]#
    r"|[\w.-]+@[\w.-]+(?:[: ][^\s#$%]*)?[ \t]?[#$%]"       # user@kmaster:~$   root@node:/#   user@h ~ %
    rf"|[\w.-]+:[^\s#$%]*[ \t]?[#$%](?=[ \t]+{_KNOWN})"    # node1:~ # iptables-save
    rf"|[\w.-]+[#$%](?=[ \t]+{_KNOWN})"                    # node1$ ipvsadm -Ln
    r"|[$%]"                                               # $ cmd
    rf"|#(?=[ \t]*{_KNOWN}))"                              # # ipvsadm -ln
    r"(?:[ \t]+(?P<cmd>\S.*?))?[ \t]*$")
_BARE_COMMAND = re.compile(rf"[ \t]*(?P<cmd>{_KNOWN_BARE}(?:[ \t].*?)?)[ \t]*$")
_QUOTE = re.compile(r"(?:[ ]{0,3}>[ \t]?)+")
_FENCE = re.compile(r"[ ]{0,3}(?:`{3,}|~{3,})[ \t]*[\w+.#-]*[ \t]*")
_ELISION = re.compile(
    r"[ \t]*(?:#[ \t]*)?(?:[\[(<][ \t]*|-{2,}[ \t]*)?(?:\.{3,}|…+|snip(?:ped)?)(?:[ \t]*[\])>]|[ \t]*-{2,})?"
    r"(?:[ \t]+[\w ,'()-]*?(?:[ \t]*(?:\.{3,}|…))?)?[ \t]*[\])>]?[ \t]*")
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_SPACES = str.maketrans({"\t": " ", "\xa0": " ", "\u202f": " ", "\u2007": " "})
_ODD_SPACES = re.compile("[\xa0\u202f\u2007\u2026]")
# A line worth a closer look starts like this; a clean dump has none of them. Looked for only after a
# newline (a literal the regular expression engine scans for quickly), and at the text's start.
_SUSPECT = (r"[ \t]*(?:>|```|~~~|\.\.\.|…|[\[(<][ \t]*(?:\.\.\.|…|snip)|-{2,}[ \t]*snip|#[ \t]*(?:\.\.\.|…)"
            rf"|[$%](?:[ \t]|$)|#[ \t]*{_KNOWN}|\[[^\]\n]*\][#$%]|\([^)\n]*\)[ \t]*[\w.-]+@|[\w.-]+@[\w.-]+"
            rf"|[\w.-]+:\S*[ \t]?[#$%][ \t]+{_KNOWN}|[\w.-]+[#$%][ \t]+{_KNOWN}|{_KNOWN_BARE}(?:[ \t]|$))")
_SUSPECT_AT = re.compile(r"\n(?=" + _SUSPECT + ")")
_SUSPECT_START = re.compile(_SUSPECT)
_HASH_COMMAND = re.compile(rf"#[ \t]*{_KNOWN}")
#: Texts up to this size are looked at line by line; a larger one (a whole node's dump, never typed into an
#: issue) only at its first and last 64 KB and for the characters a paste brings (a memchr each: ~2 ms for
#: 47 MB, where a line-by-line look costs ~45 ms). An elision line in the middle of such a text is then left
#: to its reader, which reports it as a line it cannot read: never read silently.
_LOOK_ALL = 1 << 20
_WINDOW = 64 << 10

class PasteMap:
    """Where a position of the cleaned text is in the original: the same line, and for a line whose start
    moved, the column its map says. Lines with no map (all of a clean dump) cost nothing."""

    __slots__ = ("_original", "_lines", "_columns")

    def __init__(self, original: str, columns: dict[int, list[int]] | None = None) -> None:
        self._original = original
        self._lines: list[str] | None = None
        self._columns = columns or {}

    def position(self, line: int, col: int) -> tuple[int, int]:
        """``(line, col)`` in the original of ``line:col`` (1-based) in the cleaned text."""
        keep = self._columns.get(line)
        if not keep or not col:
            return line, col
        if col - 1 < len(keep):
            return line, keep[col - 1] + 1
        return line, keep[-1] + 1 + (col - len(keep)) if keep else col

    def original_line(self, line: int) -> str:
        """Line ``line`` (1-based) of the original, printable: a CR dropped, an escape character shown as ␛."""
        if self._lines is None:
            self._lines = self._original.split("\n")
        text = self._lines[line - 1] if 0 < line <= len(self._lines) else ""
        return text.rstrip("\r").replace("\x1b", "␛")

    def restore(self, d: Diagnostic) -> Diagnostic:
        """``d`` at its place in the original: its column moved back, the original line quoted."""
        if d.line not in self._columns:
            return d
        line, col = self.position(d.line, d.col)
        return replace(d, line=line, col=col, text=self.original_line(line) if d.text else d.text)

    def restore_all(self, diags) -> list[Diagnostic]:
        return [self.restore(d) for d in diags] if self._columns else list(diags)


class Paste(NamedTuple):
    """What :func:`clean_paste` found: the text to read, what was skipped (``notes``), where positions go
    (``line_map``), the elided lines and the dumps the text holds (one segment per command, or none when
    there was no command line)."""

    text: str
    notes: tuple[str, ...]
    line_map: PasteMap
    elisions: tuple[int, ...] = ()
    segments: tuple[Segment, ...] = ()
    source: str = "-"
    filtered: tuple[str, ...] = ()  # "grep KUBE": the pipes a dump went through, which may have left lines out

    @property
    def partial(self) -> bool:
        """The text says it does not hold all of the output: elided, or sent through grep/head."""
        return bool(self.elisions or self.filtered)

    def only(self, family: str) -> Paste:
        """This paste with the dumps of other formats (and the output of other commands) blanked, each said in
        a note, when it holds several and one of them is ``family``; else itself."""
        if not any(s.family == family for s in self.segments):
            return self
        drop = [s for s in self.segments if (s.family is not None and s.family != family) or s.foreign]
        if not drop:
            return self
        lines = self.text.split("\n")
        notes = list(self.notes)
        for s in drop:
            shown = [i for i in range(s.start, s.end + 1) if lines[i - 1].strip()]
            lines[s.start - 1:s.end] = [""] * (s.end - s.start + 1)
            if not shown:
                continue
            where = f"{self.source}: {_span(shown[0], shown[-1])}"
            if s.foreign:
                notes.append(f"{where}: the output of `{_clip(s.command)}`, which kptrace skips")
            else:
                what = f"the output of `{_clip(s.command)}`" if s.command else _FAMILY_TEXT.get(str(s.family), str(s.family))
                notes.append(f"{where}: {what}, which is not {_FAMILY_TEXT[family]}: not read here")
        return self._replace(text="\n".join(lines), notes=tuple(notes),
                             elisions=tuple(e for e in self.elisions if not any(s.start <= e <= s.end for s in drop)))

    def elision_notes(self, what: str) -> list[str]:
        """One note per elided line: "the text was elided at line N: {what} may be missing"."""
        return [f"{self.source}: the text was elided at line {n}: {what} may be missing" for n in self.elisions]


_FAMILY_TEXT = {"iptables-save": "iptables-save output", "iptables-list": "an iptables listing",
                "ipvsadm": "ipvsadm output", "ipset": "ipset output", "nft": "nft output",
                "cluster-state": "cluster state (kubectl get -o json/yaml)"}


# ---------------------------------------------------------------- the pass

def clean_paste(text: str, source: str = "-", *, keep_commands: bool = False) -> Paste:
    """``text`` as its tool printed it, and what was skipped to get there (see the module's docstring).
    ``keep_commands`` leaves the prompt and command lines in place (still in ``segments``), for a reader that
    reads them itself (``iptables -t nat -L`` says the table of the chains after it).

    >>> p = clean_paste("> ```console\\n> $ sudo ipset list\\n> Name: KUBE-CLUSTER-IP\\n> ```\\n", "mail.txt")
    >>> p.text
    '\\n\\nName: KUBE-CLUSTER-IP\\n\\n'
    >>> p.line_map.restore(Diagnostic("error", "x", "mail.txt", 3, 1, "Name: KUBE-CLUSTER-IP", 5)).col
    3
    >>> pasted = "$ iptables-save; ipvsadm -Ln\\n*nat\\nCOMMIT\\nIP Virtual Server version 1.2.1 (size=4096)\\n"
    >>> [(s.start, s.family) for s in clean_paste(pasted).segments]
    [(2, 'iptables-save'), (4, 'ipvsadm')]
    """
    if not _looks_pasted(text):
        return Paste(text, (), PasteMap(text), source=source)
    text, original, done = _normalised(text)
    marks = _Marks()
    text = _dedented(text, marks.columns, done)
    starts = _lines_to_look_at(text)
    if not starts:
        return Paste(text, _summary(source, done), PasteMap(original, marks.columns), source=source)
    marks.read(text, sorted(starts), keep_commands)
    other_level, prose = marks.drop_asides(text)
    if marks.edits:
        text = _edited(text, marks.edits)
    prompts = marks.prompts
    for what, where in (("ANSI colour codes", marks.ansi), ("`> ` quote markers", marks.quoted),
                        ("text at another quote level", [n for _, n in other_level]),
                        ("markdown code fences", [n for n, _ in marks.fences]), ("text outside the code fences", prose),
                        ("a bare shell prompt" if len(prompts) == 1 else "bare shell prompts", prompts)):
        if where:
            done[what] = where
    commands = marks.commands
    found, filtered = segments(text, commands)
    notes = []
    if commands and not keep_commands:
        shown = ", ".join(f"`{_clip(c)}`" for _, c in commands[:5]) + (f" and {len(commands) - 5} more" if len(commands) > 5 else "")
        at = f"{source}:{commands[0][0]}" if len(commands) == 1 else f"{source} lines {_numbers([n for n, _ in commands])}"
        plural = "s" if len(commands) > 1 else ""
        notes.append(f"{at}: skipped the prompt{plural} and command line{plural} {shown}")
    for f in filtered:
        notes.append(f"{source}: the output went through `{_clip(f)}`: lines it left out are unknown, not absent")
    notes.extend(_summary(source, done))
    return Paste(text, tuple(notes), PasteMap(original, marks.columns), tuple(marks.elisions), tuple(found), source,
                 tuple(filtered))


def _normalised(text: str) -> tuple[str, str, dict[str, list[int] | bool]]:
    """``text`` with LF line ends and plain spaces (one character for one: columns stay), the original with LF
    line ends, and what was done."""
    original = text
    done: dict[str, list[int] | bool] = {}
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:  # old Mac line ends, or a stray CR: a line end either way
            text = original = text.replace("\r", "\n")
        done["CRLF line endings read as LF"] = True
    if not text.isascii() and _ODD_SPACES.search(text):
        if any(c in text for c in "\xa0\u202f\u2007"):
            done["non-breaking spaces read as spaces"] = True
        text = text.translate(_SPACES)  # one character for one: columns stay
    elif "\t" in text:
        text = text.translate(_SPACES)
    if "\t" in original:
        done["tabs read as spaces"] = True
    return text, original, done


def _dedented(text: str, columns: dict[int, list[int]], done: dict) -> str:
    """``text`` without the indent every line with text has (a paste indented in a mail, a ticket, a markdown list),
    each line's columns kept in ``columns``; no tool prints every line indented."""
    first = text.lstrip("\n")
    if first[:1] != " ":
        return text
    lines = text.split("\n")
    indent = min((len(x) - len(x.lstrip(" ")) for x in lines if x.strip()), default=0)
    if not indent:
        return text
    for n, line in enumerate(lines, 1):
        if line.strip():
            lines[n - 1] = _cut(line, [(0, indent)], columns, n)
    done[f"an indent of {indent} column{'s' * (indent != 1)} on every line, taken away"] = True
    return "\n".join(lines)


def _lines_to_look_at(text: str) -> set[int]:
    """The lines to look at, by where they start: a few in a dump, all of them in a short paste."""
    starts = _suspect_starts(text)
    i = text.find("\x1b")
    while i >= 0:  # the lines with colour codes
        starts.add(text.rfind("\n", 0, i) + 1)
        nl = text.find("\n", i)
        i = text.find("\x1b", nl) if nl >= 0 else -1
    return starts


def _edited(text: str, edits: dict[int, tuple[int, str]]) -> str:
    """``text`` with each line that starts at a key of ``edits`` (up to its end) replaced by its new text."""
    out, pos = [], 0
    for start in sorted(edits):
        end, new = edits[start]
        out.append(text[pos:start])
        out.append(new)
        pos = end
    out.append(text[pos:])
    return "".join(out)


class _Marks:
    """What the lines looked at hold (colour codes, quote markers, fences, elisions, prompts, command lines), by
    line number, and the edits that take it away."""

    def __init__(self) -> None:
        self.columns: dict[int, list[int]] = {}
        self.edits: dict[int, tuple[int, str]] = {}  # line start -> (line end, new text)
        self.ansi: list[int] = []
        self.quoted: list[int] = []
        self.depths: dict[int, int] = {}  # line number -> its quote level, for the quoted lines with text
        self.fences: list[tuple[int, int]] = []  # (line number, line start)
        self.elisions: list[int] = []
        self.prompts: list[int] = []
        self.commands: list[tuple[int, str]] = []

    def read(self, text: str, ordered: list[int], keep_commands: bool) -> None:
        """Each line starting at ``ordered`` (sorted offsets), what it holds and its edit."""
        for start, n in zip(ordered, _line_numbers(text, ordered)):
            end = text.find("\n", start)
            if end < 0:
                end = len(text)
            line = text[start:end]
            if "\x1b" in line:
                line = _cut(line, [m.span() for m in _ANSI.finditer(line)], self.columns, n)
                self.ansi.append(n)
            if line[:1] in (" ", ">") and (m := _QUOTE.match(line)) is not None and ">" in m.group():
                line = _cut(line, [(0, m.end())], self.columns, n)
                self.quoted.append(n)
                if line.strip():
                    self.depths[n] = m.group().count(">")
            new = line
            if not line.strip():
                pass
            elif _FENCE.fullmatch(line):
                self.fences.append((n, start))
                new = ""
            elif ("." in line or "…" in line or "snip" in line) and _ELISION.fullmatch(line):
                self.elisions.append(n)
                new = ""
            elif (m := _PROMPT.match(line) or _BARE_COMMAND.match(line)) is not None:
                if m.group("cmd"):
                    self.commands.append((n, m.group("cmd")))
                    if not keep_commands:
                        new = ""
                else:
                    self.prompts.append(n)
                    new = ""
            if new != text[start:end]:
                self.edits[start] = (end, new)

    def drop_asides(self, text: str) -> tuple[list[tuple[int, int]], list[int]]:
        """The lines at another quote level than the dump's (a mail reply) and outside its code fences go, and
        the commands and elisions among them: those lines (offset, number), and the prose's line numbers."""
        edits = self.edits
        prose: list[int] = []
        other_level = _other_quote_level(text, self.depths, edits) if self.depths else []
        if other_level:
            for start, _n in other_level:
                end = text.find("\n", start)
                edits[start] = (end if end >= 0 else len(text), "")
            skip = {n for _, n in other_level}
            self.commands = [(n, c) for n, c in self.commands if n not in skip]
            self.elisions = [n for n in self.elisions if n not in skip]
        if self.fences:
            for start, n in _outside_fences(text, self.fences, edits):
                prose.append(n)
                end = text.find("\n", start)
                edits[start] = (end if end >= 0 else len(text), "")
            prose_set = set(prose)
            self.commands = [(n, c) for n, c in self.commands if n not in prose_set]
            self.elisions = [n for n in self.elisions if n not in prose_set]
        return other_level, prose


def split_dumps(text: str) -> list[str]:
    """The dumps of one text, one a format: ``[text]`` for one dump, else each dump's lines (with the
    command lines before them) at their own line numbers, the other lines blank, for its own reader.

    >>> parts = split_dumps("$ iptables-save\\n*nat\\nCOMMIT\\n$ ipvsadm -Ln\\nTCP  10.0.0.1:80 rr\\n")
    >>> [p.split("\\n") for p in parts]
    [['$ iptables-save', '*nat', 'COMMIT', ''], ['', '', '', '$ ipvsadm -Ln', 'TCP  10.0.0.1:80 rr', '']]
    """
    paste = clean_paste(text)
    if len({s.family for s in paste.segments if s.family is not None}) <= 1:
        return [text]
    groups: list[list[Segment]] = []  # runs of one format; output of other commands goes with the run it is in
    family = None
    for s in paste.segments:
        if groups and (s.family is None or family is None or s.family == family):
            groups[-1].append(s)
            family = family or s.family
        else:
            groups.append([s])
            family = s.family
    lines = text.split("\n")
    parts = []
    last = 0
    for n, group in enumerate(groups):
        head = group[0]
        # From its command line (its reader sees the tool), unless that line ran the dump before it too.
        first = 1 if not n else head.command_line if last < head.command_line else head.start
        last = group[-1].end if n < len(groups) - 1 else len(lines)
        parts.append("\n" * (first - 1) + "\n".join(lines[first - 1:last]) + ("\n" if last < len(lines) else ""))
    return parts


# ---------------------------------------------------------------- pieces

def _looks_pasted(text: str) -> bool:
    """Whether ``text`` may hold anything :func:`clean_paste` takes away (the fast path: a clean dump says no)."""
    if "\r" in text or "\x1b" in text or "\t" in text or text.lstrip("\n")[:1] == " ":
        return True
    if not text.isascii() and _ODD_SPACES.search(text):
        return True
    return bool(_suspect_starts(text, first=True))


def _suspect_starts(text: str, first: bool = False) -> set[int]:
    """Where the lines start that may be a prompt, a fence, an elision or quoted (``first``: stop at one)."""
    out: set[int] = set()
    if _SUSPECT_START.match(text):
        out.add(0)
        if first:
            return out
    if len(text) <= _LOOK_ALL:
        for m in _SUSPECT_AT.finditer(text):
            out.add(m.start() + 1)
            if first:
                break
        return out
    for m in _SUSPECT_AT.finditer(text, 0, _WINDOW):
        out.add(m.start() + 1)
    for m in _SUSPECT_AT.finditer(text, len(text) - _WINDOW):
        out.add(m.start() + 1)
    if out and first:
        return out
    # In between, only lines with a character a prompt or a fence has (rare in a dump: '#' starts two
    # comment lines a table): each found with a memchr, not a look at every line.
    for ch in "$@%`#":
        i = text.find(ch, _WINDOW, len(text) - _WINDOW)
        seen = 0
        while i >= 0:
            seen += 1
            if seen > 20000:  # a dump full of them after all (an ipvsadm listing's "->"): every line, then
                out.update(m.start() + 1 for m in _SUSPECT_AT.finditer(text))
                return out
            start = text.rfind("\n", 0, i) + 1
            if _SUSPECT_START.match(text, start):
                out.add(start)
                if first:
                    return out
            nl = text.find("\n", i)
            if nl < 0:
                break
            i = text.find(ch, nl, len(text) - _WINDOW)
    return out


def _line_numbers(text: str, starts: list[int]) -> list[int]:
    """The 1-based line numbers of the sorted line starts ``starts``."""
    out, line, pos = [], 1, 0
    for s in starts:
        line += text.count("\n", pos, s)
        pos = s
        out.append(line)
    return out


def _cut(line: str, spans: list[tuple[int, int]], columns: dict[int, list[int]], line_no: int) -> str:
    """``line`` without ``spans``; ``columns[line_no]`` maps each kept character to its original column."""
    keep = columns.get(line_no) or list(range(len(line)))
    out, kept, pos = [], [], 0
    for a, b in spans:
        out.append(line[pos:a])
        kept.extend(keep[pos:a])
        pos = b
    out.append(line[pos:])
    kept.extend(keep[pos:])
    columns[line_no] = kept or [keep[-1] + 1 if keep else 0]
    return "".join(out)


def _outside_fences(text: str, fences: list[tuple[int, int]], edits: dict) -> list[tuple[int, int]]:
    """``(line start, line number)`` of the non-blank lines outside the code blocks: prose around a pasted
    block. A paste that starts inside a block (an odd number of fences, the first line not one) has its
    first fence closing it."""
    first_text = len(text) - len(text.lstrip())
    first_line_start = text.rfind("\n", 0, first_text) + 1
    inside = fences[0][1] != first_line_start and len(fences) % 2 == 1
    out = []
    pos, n = 0, 1
    bounds = [(start, ln) for ln, start in fences] + [(len(text) + 1, 0)]
    for fence_start, fence_no in bounds:
        if not inside:
            while pos < fence_start and pos <= len(text):
                end = text.find("\n", pos)
                end = len(text) if end < 0 else end
                line = edits[pos][1] if pos in edits else text[pos:end]
                if pos < fence_start and line.strip():
                    out.append((pos, n))
                pos, n = end + 1, n + 1
        inside = not inside
        if fence_no:
            pos = text.find("\n", fence_start)
            pos = len(text) + 1 if pos < 0 else pos + 1
            n = fence_no + 1
    return out


def _other_quote_level(text: str, depths: dict[int, int], edits: dict) -> list[tuple[int, int]]:
    """``(line start, line number)`` of the lines with text at a quote level other than most lines'."""
    levels = []  # (start, number, level)
    start, n = 0, 1
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if n in depths:
            levels.append((start, n, depths[n]))
        elif start not in edits and text[start:end].strip():
            levels.append((start, n, 0))
        start, n = end + 1, n + 1
    counts: dict[int, int] = {}
    for _, _, level in levels:
        counts[level] = counts.get(level, 0) + 1
    main = max(counts, key=lambda k: (counts[k], k))
    return [(s, n) for s, n, level in levels if level != main]


def _summary(source: str, done: dict) -> tuple[str, ...]:
    """One note for what was cleaned away: "skipped markdown code fences (lines 1, 9), ...; CRLF ... read as LF"."""
    skipped, read = [], []
    for what, where in done.items():
        if where is True:
            read.append(what)
        elif where:
            skipped.append(f"{what} ({'line' if len(where) == 1 else 'lines'} {_numbers(where)})")
    text = (["skipped " + ", ".join(skipped)] if skipped else []) + ([", ".join(read)] if read else [])
    return (f"{source}: read as pasted text: " + "; ".join(text),) if text else ()


def _numbers(ns: list[int]) -> str:
    """``1, 3-7, 9``; a long list cut."""
    runs: list[list[int]] = []
    for n in ns:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs]
    return ", ".join(shown[:8]) + (f" and {len(shown) - 8} more" if len(shown) > 8 else "")


def _span(a: int, b: int) -> str:
    return f"line {a}" if a == b else f"lines {a}-{b}"


def _clip(s: str, n: int = 100) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
