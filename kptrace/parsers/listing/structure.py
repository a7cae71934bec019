"""A listing's structure: its chains (``Chain`` headers and their column layouts, or ``-P``/``-N``/``-A``
lines), the rule lines of each, the pasted command lines and what else stands between them; which forms
and which family the input is."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kptrace.model.addr import is_uint
from kptrace.model.rules import BUILTIN_CHAINS

if TYPE_CHECKING:
    from kptrace.parsers.listing.translate import Listing

__all__ = ["ANY_ADDRESS", "ANY_IFACE", "ANY_PROTO", "OPT", "SPEC_COUNTERS", "V4_HOST", "Block", "Command", "Layout",
           "clip", "count", "read_command", "read_family", "read_forms", "read_structure", "rule_fields", "text_after_prompt"]

ANY_ADDRESS = frozenset({"0.0.0.0/0", "::/0", "anywhere"})
ANY_IFACE = frozenset({"*", "any"})
ANY_PROTO = frozenset({"all", "0"})
OPT = {"--": "", "-f": " -f", "!f": " ! -f"}
_SUFFIX = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_CHAIN_HEADER = re.compile(
    r"Chain (\S+) \((?:policy (\S+)(?: (\d+[KMGT]?) packets, (\d+[KMGT]?) bytes)?|(\d+) references|ERROR obtaining refs)\)\s*$")
_match_chain_header = _CHAIN_HEADER.match
#: a shell prompt ("root@node1:~# ", "$ ", "[root@node1 ~]# ") or a "# comment" line
_PROMPT = re.compile(r"(?:\[[^\]]*\]|[^\s#$%>]*)[#$%>](?=\s|$)")
#: a prompt that is one, not a "# comment": something before the # ("root@node1:~#", "[root@node1 ~]#"), or $ or %
_SHELL_PROMPT = re.compile(r"(?:\[[^\]]*\]|[^\s#$%>]+)[#$%>]\s|[$%]\s")
_COMMAND = re.compile(r"\s*(?:sudo\s+(?:-\S+\s+)*)?(?:\S*/)?(ip6?tables)(?:-legacy|-nft)?\s+(.*)$")
_TOOL_ERROR = re.compile(r"(?:ip6?tables(?:-legacy|-nft)?(?: v[\d.]+(?: \(\w+\))?)?: |# Table `)")
_LEGACY_WARNING = "# Warning: ip"
# re.ASCII: \d would also take the digits of other scripts ("٣"), which iptables never prints.
_PROTO_LIKE = re.compile(r"!?(?:[a-z][a-z0-9._-]*|\d+)$", re.ASCII)
V4_HOST = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}$", re.ASCII)
SPEC_COUNTERS = re.compile(r" -c (\d+) (\d+)(?= |$)", re.ASCII)
#: how the rule lines of a -v (or --line-numbers) listing start
_VERBOSE_FIRSTS = frozenset(" 0123456789")
_FIRST = operator.itemgetter(0)
#: words only one family's rules print: ICMPv6 names and types, ip6tables' names; ICMP ones
_FAMILY_WORDS = re.compile(r"(ipv6-icmp|icmp6-|icmpv6|\bip6-\w+|to:\[)|(\bicmp\b|icmp-(?:port|host|net|proto|admin))")
_SPEC_ADDRESS = re.compile(r" -[sd] (\S+)")


@dataclass(slots=True)
class Layout:
    """Which columns a chain's rules have, from its column header line."""

    words: tuple[str, ...]
    target: int
    opt: int | None
    counters: int | None  # index of pkts
    via: int | None  # index of in (out follows)
    exact: bool  # -x: the counters are 8 wide ("    pkts      bytes")

    @classmethod
    def of(cls, words: list[str], header: str) -> "Layout":
        return cls(tuple(words), words.index("target"), words.index("opt") if "opt" in words else None,
                   words.index("pkts") if "pkts" in words else None, words.index("in") if "in" in words else None,
                   "pkts" in words and "pkts bytes" not in header)


@dataclass(slots=True)
class Block:
    """One chain as the listing shows it (a ``Chain`` header, or ``-P``/``-N`` of ``iptables -S``)."""

    name: str
    line: int  # 0-based index of its header
    kind: str  # "L" or "S"
    policy: str | None = None
    counters: tuple[int, int] | None = None
    layout: Layout | None = None
    rules: list[int] = field(default_factory=list)
    command: "Command | None" = None
    table: str | None = None
    known: frozenset[str] | None = None  # the tables its name says it is in (grammars: [tables.chains])


@dataclass(slots=True)
class Command:
    """A pasted command line: what it says about the listing below it."""

    line: int
    family: int
    table: str | None  # None: not given (-L lists the filter table)
    form: str  # "-L" or "-S"
    flags: str  # "-n -v", as written


def rule_fields(line: str, layout: Layout) -> tuple[list[str], str, int] | None:
    """The columns of a rule line, an empty target and an empty opt column filled in; the rest of
    the line and where it starts."""
    words = layout.words
    n = len(words)
    opt_at = layout.opt
    for drop_target, drop_opt in ((False, False), (True, False), (False, True), (True, True)):
        if drop_opt and opt_at is None:
            continue
        k = n - drop_target - drop_opt
        parts = line.split(None, k)
        if len(parts) < k:
            continue
        if drop_target:
            parts.insert(layout.target, "")
        if drop_opt and opt_at is not None:
            parts.insert(opt_at, "--")
        elif opt_at is not None and parts[opt_at] not in OPT:
            continue
        if not _PROTO_LIKE.match(parts[layout.target + 1]):
            continue
        rest = parts[n] if len(parts) > n else ""
        return parts[:n], rest, len(line) - len(rest)
    return None


def read_command(text: str, line: int) -> Command | None:
    m = _COMMAND.match(text)
    if m is None:
        return None
    args = m.group(2).split()
    table, form, flags = None, None, []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-t", "--table") and i + 1 < len(args):
            table = args[i + 1]
            i += 2
            continue
        if a.startswith("--table="):
            table = a.split("=", 1)[1]
        elif a in ("--list", "--list-rules"):
            form = "-L" if a == "--list" else "-S"
        elif a in ("--numeric", "--verbose", "--exact", "--line-numbers"):
            flags.append(a)
        elif a.startswith("-") and not a.startswith("--"):
            letters = a[1:]
            if "t" in letters and letters.endswith("t") and i + 1 < len(args):
                table = args[i + 1]
                i += 1
            for c in letters:
                if c in "LS":
                    form = "-" + c
                elif c in "nvx":
                    flags.append("-" + c)
        i += 1
    if form is None:
        return None
    if table is not None and table not in BUILTIN_CHAINS:
        return None
    return Command(line, 6 if m.group(1) == "ip6tables" else 4, table, form, " ".join(flags))


def count(text: str) -> int:
    mult = _SUFFIX.get(text[-1])
    return int(text[:-1]) * mult if mult else int(text)


def read_structure(lst: Listing) -> None:
    """Chains, their column layouts and rule lines, the -S lines, and the pasted command lines."""
    _StructureReader(lst).read()


class _StructureReader:
    """One pass over a listing's lines (:func:`read_structure`): a method per kind of line."""

    def __init__(self, lst: Listing) -> None:
        self.lst = lst
        self.lines = lst.lines
        self.count = len(lst.lines)
        self.command: Command | None = None
        self.spec_blocks: dict[str, Block] = {}
        self.layouts: dict[str, Layout] = {}
        #: [prompt line, command, last line of its output]: another command, whose output is skipped
        self.foreign: list = []
        self.skipping = False  # the rest of a chain kptrace could not read the header of: one error is enough

    def read(self) -> None:
        lines = self.lines
        count = self.count
        i = 0
        while i < count:
            line = lines[i]
            if not line or line.isspace():
                self.skipping = False  # a blank line ends a chain's listing
                i += 1
                continue
            c0 = line[0]
            if (self.foreign or self.skipping) and not (c0 == "C" and line.startswith("Chain ")) \
                    and not (c0 == "-" and line[1:3] in ("P ", "N ", "A ")) and text_after_prompt(line) is None:
                if self.foreign:
                    self.foreign[2] = i
                i += 1
                continue
            if self.foreign:
                self.end_foreign()
            self.skipping = False
            if c0 == "C" and line.startswith("Chain "):
                i = self.chain(i, line)
                continue
            if c0 == "-" and len(line) > 3 and line[2] == " " and line[1] in "PNA":
                _spec_line(self.lst, i, line, self.command, self.spec_blocks)
            else:
                body = text_after_prompt(line)
                if body is not None:
                    self.aside(i, line, body)
                else:
                    self.stray(i, line)
            i += 1
        self.end_foreign()

    def end_foreign(self) -> None:
        foreign = self.foreign
        if foreign and foreign[2] > foreign[0]:
            where = f"line {foreign[2] + 1}" if foreign[2] == foreign[0] + 1 else f"lines {foreign[0] + 2}-{foreign[2] + 1}"
            self.lst.notes.append(f"{self.lst.source} {where}: the output of `{clip(foreign[1], 40)}`, which kptrace skips")
        foreign.clear()

    def chain(self, i: int, line: str) -> int:
        """A ``Chain NAME (...)`` line, its column header and its rule lines: the index of the line after them."""
        lst = self.lst
        lines = self.lines
        n_lines = self.count
        m = _match_chain_header(line)
        if m is None:
            lst.problem("error", "a Chain line that is not `Chain NAME (policy P)` or `Chain NAME (N references)`", i, 1, 5,
                        "is the line cut off?")
            self.skipping = True
            return i + 1
        name, policy, pkts, nbytes, _ = m.groups()
        block = Block(name, i, "L", policy, None if pkts is None else (count(pkts), count(nbytes)), None, [], self.command)
        lst.blocks.append(block)
        i += 1
        header = lines[i] if i < n_lines else ""
        layout = self.layouts.get(header)
        if layout is None:
            words = header.split()
            if "target" not in words or "destination" not in words:
                lst.problem("error", f"chain {block.name} has no column header line", min(i, n_lines - 1), 1,
                            len(header.rstrip()),
                            "after `Chain NAME (...)` iptables prints `target prot opt source destination` (or the -v "
                            "columns); kptrace skips this chain's rules")
                lst.blocks.pop()  # a chain kptrace cannot read is not in the input: a trace says it stops there
                self.skipping = True
                return i
            layout = self.layouts[header] = Layout.of(words, header)
        block.layout = layout
        i += 1
        # The chain's rules: every line up to a blank one, that a shell prompt or a command does not
        # interrupt. With -v (and --line-numbers) they start with a space or a digit: the fast case.
        # (One method with the header: a 10k-Service listing has 111,000 chains, and a call a chain was 2% of its load.)
        start = i
        verbose = layout.counters is not None or layout.words[0] == "num"
        if verbose:
            # The chain's lines up to the next empty one, when they all start as rules do (a
            # 10k-Service listing is 110,000 chains and 540,000 rule lines): looked at in C.
            try:
                end = lines.index("", i)
            except ValueError:
                end = n_lines
            if set(map(_FIRST, lines[i:end])) <= _VERBOSE_FIRSTS:
                i = end
        elided = lst.elided
        while i < n_lines:
            line = lines[i]
            if not line:
                if i in elided:  # `...` among the rules: the chain goes on after it (its notes say what may be missing)
                    i += 1
                    continue
                break
            c0 = line[0]
            if verbose and (c0 == " " or is_uint(c0)):
                i += 1
                continue
            if line.isspace() or (c0 == "C" and line.startswith("Chain ")) or text_after_prompt(line):
                break
            i += 1
        if i > start:
            if elided:
                block.rules = [j for j in range(start, i) if j not in elided]
                for j in block.rules:
                    lst.owner[j] = block
            else:
                block.rules = list(range(start, i))
                lst.owner[start:i] = [block] * (i - start)
        return i

    def aside(self, i: int, line: str, body: str) -> None:
        """A line between listings: what a command line says, a note on a legacy warning, another command's output
        to skip (a ``# comment`` above a chain, as people label them, says nothing)."""
        lst = self.lst
        if _TOOL_ERROR.match(line) or _TOOL_ERROR.match(body.strip()):
            lst.problem("error", "iptables printed an error here, not a listing", i, 1, len(line.rstrip()),
                        "the command failed (no such chain? an iptables-nft table iptables-legacy cannot read?): "
                        "paste what the command printed when it worked")
            return
        cmd = read_command(body, i)
        if cmd is not None:
            self.command = cmd
            self.spec_blocks = {}
        elif line.startswith(_LEGACY_WARNING):
            lst.notes.append(f"{lst.source} line {i + 1}: the node also has iptables-legacy rules, which this "
                             "listing does not show (list them with iptables-legacy)")
        elif body.strip() and _SHELL_PROMPT.match(line):
            self.foreign[:] = [i, body.strip(), i]  # another command: its output follows

    def stray(self, i: int, line: str) -> None:
        stripped = line.strip()
        self.lst.problem("error", "not part of an iptables listing", i, 1, len(stripped.split()[0]) if stripped else 1,
                         "kptrace reads `iptables -L` (any flags) and `iptables -S` output; a line outside a chain, "
                         "between a blank line and the next `Chain NAME (...)`, is none of them")


def text_after_prompt(line: str) -> str | None:
    """For a line that is no part of a listing but may stand between listings (a shell prompt and what
    follows it, a command line, a ``# comment``, what iptables prints when it fails): the text after
    the prompt. None for anything else (rule lines: without -v they start with their target, which no
    prompt pattern takes)."""
    c0 = line[0]
    if c0 == " " or is_uint(c0):
        return None
    prompt = _PROMPT.match(line)
    if prompt is not None:
        return line[prompt.end():]
    if line.startswith(("iptables", "ip6tables", "sudo ")):
        return line
    return None


def _spec_line(lst: Listing, i: int, line: str, command: Command | None, spec_blocks: dict[str, Block]) -> Block:
    """A line of ``iptables -S``: ``-P`` and ``-N`` declare a chain, ``-A`` adds a rule to it."""
    parts = line.split()
    name = parts[1] if len(parts) > 1 else ""
    if line[1] != "N":
        lst.forms.add("-S -v" if SPEC_COUNTERS.search(line) else "-S")
    if line[1] == "A":
        b = spec_blocks.get(name)
        if b is None:  # `iptables -S | grep` may leave out the -N
            b = spec_blocks[name] = Block(name, i, "S", command=command)
            lst.blocks.append(b)
        b.rules.append(i)
        lst.owner[i] = b
        return b
    b = Block(name, i, "S", command=command)
    if line[1] == "P":
        b.policy = parts[2] if len(parts) > 2 else "ACCEPT"
        c = SPEC_COUNTERS.search(line)
        if c is not None:
            b.counters = (int(c.group(1)), int(c.group(2)))
    spec_blocks[name] = b
    lst.blocks.append(b)
    return b


def read_forms(lst: Listing) -> None:
    """Which listing forms the input holds ("-L -n -v", "-S"), from the column headers, the command
    lines, and whether addresses are printed as numbers ("0.0.0.0/0") or names ("anywhere")."""
    numeric = None
    for b in lst.blocks:
        if b.kind == "L" and numeric is None:
            for i in b.rules:
                words = lst.lines[i].split()
                if "anywhere" in words:
                    numeric = False
                elif "0.0.0.0/0" in words or "::/0" in words:
                    numeric = True
                if numeric is not None:
                    break
    seen = set()
    for b in lst.blocks:
        if b.kind != "L" or b.layout is None or (b.layout.words, id(b.command)) in seen:
            continue
        seen.add((b.layout.words, id(b.command)))
        flags = b.command.flags.split() if b.command is not None else []
        form = ["-L"]
        if "-n" in flags or "--numeric" in flags or (numeric and not b.command):
            form.append("-n")
        if b.layout.counters is not None:
            form.append("-v")
            if b.layout.exact:
                form.append("-x")
        if b.layout.words[0] == "num":
            form.append("--line-numbers")
        lst.forms.add(" ".join(form))


def read_family(lst: Listing) -> int:
    """IPv6 when a command line says ip6tables, or the rules' addresses (or ICMPv6, ip6- names) are IPv6;
    IPv4 when they are IPv4; when nothing says, IPv4 and a note."""
    families = {b.command.family for b in lst.blocks if b.command is not None}
    if families:
        if len(families) > 1:
            first6 = next(b.command for b in lst.blocks if b.command is not None and b.command.family == 6)
            lst.problem("error", "this input holds both iptables and ip6tables output", first6.line, 1,
                        len(lst.lines[first6.line]), "pass the IPv4 and the IPv6 listing as two files (--dump twice)")
        return 6 if 6 in families and len(families) == 1 else 4
    seen = 0
    for b in lst.blocks:
        for i in b.rules:
            line = lst.lines[i]
            if b.kind == "L":
                got = rule_fields(line.rstrip(), b.layout) if b.layout is not None else None
                values = [v.lstrip("!").partition("/")[0] for v in got[0][-2:]] if got is not None else []
            else:
                values = [m.group(1).partition("/")[0] for m in _SPEC_ADDRESS.finditer(line)]
            for value in values:
                if value == "0.0.0.0" or V4_HOST.match(value):
                    return 4
                if ":" in value or value.startswith("ip6-"):
                    return 6
            m = _FAMILY_WORDS.search(line)
            if m is not None:
                return 6 if m.group(1) else 4
            seen += 1
            if seen > 2000:
                break
    if lst.blocks:
        lst.notes.append(f"{lst.source}: nothing in the listing says whether iptables or ip6tables printed it (no address, "
                         "no ICMP type); read as IPv4: paste the `ip6tables -L ...` command line with an IPv6 listing")
    return 4


#: words only one family's rules print: ICMPv6 names and types, ip6tables' names; ICMP ones


def clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"
