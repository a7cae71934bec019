"""Line-level facts of nftables text shared by the loader's parts: what starts a statement, brace depth,
``;``-separated pieces, shell prompts and elisions pasted with a listing, and the hints that say what to run
on the node."""

from __future__ import annotations

import re

from kptrace.model.nft import UNLOADABLE

__all__ = [
    "BLOCK_HEADS", "CHAIN_PROPS", "CHAIN_PROP_WORDS", "ELISION", "FAMILY_GUESS_V6", "HINT_FULL", "INTERNAL",
    "IPTABLES_SAVE", "POSITIONAL", "PROMPT", "PROMPT_ALONE", "UNLOADABLE_RULE", "VERBS", "brace_depth", "split_semis",
    "starts_statement",
]

#: a shell prompt with the command that made the output (``root@node:~# nft list ruleset``), pasted with it
PROMPT = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?(?:[\w.-]+@[\w.-]+(?::[^\s$#]*)?\s*)?[$#]\s*(?:sudo\s+(?:-\S+\s+)*)?"
                    r"(?:nft|iptables|ip6tables|iptables-nft|iptables-save|kubectl|cat|ssh|crictl|docker)\b")
#: a prompt without a command (``user@host:~$``)
PROMPT_ALONE = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?[\w.-]+@[\w.-]+(?::\S*)?\s*[$#](?:\s|$)")
#: The start of the message of a diagnostic that reports a bug in kptrace (the fuzz tests look for it).
INTERNAL = "kptrace could not read this (a bug in kptrace)"
#: a rule nft cannot load, written by kptrace as a comment (``# kptrace: not loadable ... add rule ...``): read back
UNLOADABLE_RULE = re.compile(re.escape(UNLOADABLE) + r" \(([^)]*)\): (add rule .*)$")
#: a line of iptables-save output (a table, a chain's policy line, an -A rule): the wrong input for this reader
IPTABLES_SAVE = re.compile(r"^(?:\*(?:nat|filter|mangle|raw|security)\s*$|:[A-Z][\w-]* (?:ACCEPT|DROP|-) \["
                           r"|-A [\w-]+ )", re.M)
#: what people put where they cut lines out of a listing
ELISION = frozenset({"...", "…", "[...]", "[…]", "<snip>", "[snip]", "(...)"})
#: the starts of a chain block's property lines (anything else in a chain block is a rule)
CHAIN_PROPS = ("type ", "policy ", "comment ", "devices ", "device ")
CHAIN_PROP_WORDS = frozenset(p.strip() for p in CHAIN_PROPS)
HINT_FULL = "run `nft list ruleset > ruleset.nft` on the node and pass the whole file"
#: IPv6 selectors in a fragment pasted without its table: its placeholder table is ip6
FAMILY_GUESS_V6 = re.compile(r"\bip6 (?:saddr|daddr)\b")
#: where an ``add|insert rule`` puts its rule (the fast path leaves these to the slow one)
POSITIONAL = ("position ", "handle ", "index ")
VERBS = frozenset({"add", "create", "insert", "replace", "delete", "destroy", "flush", "reset", "list"})
BLOCK_HEADS = frozenset({"table", "chain", "set", "map"})


_STATEMENT_STARTS = ("table ", "chain ", "set ", "map ", "add ", "delete ", "flush ", "insert ", "replace ", "create ",
                     "destroy ")


def starts_statement(line: str) -> bool:
    """A line that starts a new block or command: it never continues an open "{" of the line before."""
    return line.lstrip().startswith(_STATEMENT_STARTS)


def brace_depth(text: str) -> int:
    """Braces opened minus closed, outside quotes and comments."""
    if '"' not in text and "#" not in text:
        return text.count("{") - text.count("}")
    d = 0
    inq = False
    for ch in text:
        if ch == '"':
            inq = not inq
        elif inq:
            continue
        elif ch == "#":
            break
        elif ch == "{":
            d += 1
        elif ch == "}":
            d -= 1
    return d


def split_semis(body: str) -> list[str]:
    """Split a declaration's body at ``;`` and line ends outside quotes and braces."""
    if '"' not in body and "{" not in body:
        return body.replace("\n", ";").split(";")
    out = []
    start = 0
    depth = 0
    inq = False
    for j, ch in enumerate(body):
        if ch == '"':
            inq = not inq
        elif inq:
            continue
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif (ch == ";" or ch == "\n") and depth == 0:
            out.append(body[start:j])
            start = j + 1
    out.append(body[start:])
    return out
