"""Errors, diagnostics and exit codes: the one place they are defined.

Exception tree::

    KptraceError                 any error kptrace reports to a user (never a traceback)
    ├── UsageError               a command-line value that is malformed   -> EXIT_USAGE (2)
    ├── InputError               input cannot be read or understood      -> EXIT_INPUT (3)
    │   └── ParseError           ... with the diagnostics that say where
    ├── NotFoundError            the Service / chain / packet target is not in the input -> EXIT_NOT_FOUND (4)
    └── EnvironmentProblem       a tool, permission or kernel feature is missing -> EXIT_ENVIRONMENT (5)

A :class:`Diagnostic` is one problem at one place (``file:line:col``); parsers collect them rather than
stopping at the first, and :func:`format_diagnostic` renders one with the line quoted and a caret.

>>> d = Diagnostic("error", "unknown table 'nta'", "dump.rules", 3, 2, "*nta", 3, hint="tables are raw, mangle, nat, filter, security")
>>> print(format_diagnostic(d))
dump.rules:3:2: error: unknown table 'nta'
    *nta
     ^^^
  hint: tables are raw, mangle, nat, filter, security
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EXIT_CODES",
    "EXIT_ENVIRONMENT",
    "EXIT_FINDINGS",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "Diagnostic",
    "EnvironmentProblem",
    "InputError",
    "KptraceError",
    "NotFoundError",
    "ParseError",
    "UsageError",
    "binary_data",
    "format_diagnostic",
]

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_NOT_FOUND = 4
EXIT_ENVIRONMENT = 5
EXIT_PARTIAL = 6
EXIT_INTERNAL = 70

#: Documented in ``kptrace --help`` and docs/exit-codes.md; keep the three in step (tests check).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FINDINGS: "the command ran and found problems: drift (see drift --fail-on), a behaviour change (diff), stale conntrack "
                   "entries (conntrack), parse --strict warnings, a trace outcome marked assumed with --strict",
    EXIT_USAGE: "bad command line (unknown option, malformed --dst, ...)",
    EXIT_INPUT: "input cannot be read or parsed (position, quoted line and hint on stderr)",
    EXIT_NOT_FOUND: "the Service, chain or address asked for is not in the input",
    EXIT_ENVIRONMENT: "a required tool, permission or kernel feature is missing, or a node could not be read",
    EXIT_PARTIAL: "some nodes could not be read, or were read without what their mode needs (an nftables node without its "
                  "ruleset); the others were (each failure is reported)",
    EXIT_INTERNAL: "internal error (a bug: rerun with --debug and report it)",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem at one place. ``line`` and ``col`` are 1-based; ``col`` 0 means the whole line."""

    severity: str  # "error" | "warning" | "note"
    message: str
    source: str
    line: int = 0
    col: int = 0
    text: str = ""
    length: int = 0
    hint: str = ""

    @property
    def location(self) -> str:
        if not self.line:
            return self.source
        if not self.col:
            return f"{self.source}:{self.line}"
        return f"{self.source}:{self.line}:{self.col}"


def format_diagnostic(d: Diagnostic, *, max_width: int = 160) -> str:
    """``file:line:col: severity: message``, the line quoted, a caret under the spot, and the hint."""
    out = [f"{d.location}: {d.severity}: {d.message}"]
    if d.text:
        text = d.text.expandtabs(1)
        start = max(d.col - 1, 0)
        # Long lines (a 400-character kube-proxy rule) are cut around the spot so the caret stays visible.
        offset = 0
        if len(text) > max_width:
            offset = max(0, min(start - max_width // 3, len(text) - max_width))
            text = ("…" if offset else "") + text[offset : offset + max_width] + ("…" if offset + max_width < len(text) else "")
            start = start - offset + (1 if offset else 0)
        out.append("    " + text)
        if d.col:
            out.append("    " + " " * start + "^" * max(1, min(d.length or 1, max_width)))
    if d.hint:
        out.append(f"  hint: {d.hint}")
    return "\n".join(out)


def binary_data(source: str, line: int, col: int, what: str, tool: str) -> Diagnostic:
    """The error for an input with a NUL byte at ``line``:``col``: not ``what`` (the text output of ``tool``)."""
    return Diagnostic("error", f"binary data (a NUL byte), not {what}", source, line, col, "",
                      hint=f"expected the text output of `{tool}`; is this a compressed or binary file?")


class KptraceError(Exception):
    """Base of every error kptrace reports to a user."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class UsageError(KptraceError):
    """A command-line value that is malformed whatever the input holds (``--kube-proxy-version banana``)."""

    exit_code = EXIT_USAGE


class InputError(KptraceError):
    """The input cannot be read or understood."""

    exit_code = EXIT_INPUT


class ParseError(InputError):
    """The input has errors; ``diagnostics`` says where (all of them, not just the first)."""

    def __init__(self, diagnostics: list[Diagnostic], *, limit: int = 20) -> None:
        errors = [d for d in diagnostics if d.severity == "error"]
        self.diagnostics = diagnostics
        self.limit = limit
        first = errors[0] if errors else diagnostics[0]
        super().__init__(f"{first.location}: {first.message}", hint=first.hint)

    def render(self) -> str:
        shown = [d for d in self.diagnostics if d.severity == "error"] or self.diagnostics
        parts = [format_diagnostic(d) for d in shown[: self.limit]]
        if len(shown) > self.limit:
            parts.append(f"... and {len(shown) - self.limit} more errors")
        return "\n".join(parts)


class NotFoundError(KptraceError):
    """What was asked for is not in the input."""

    exit_code = EXIT_NOT_FOUND


class EnvironmentProblem(KptraceError):
    """A tool, a permission or a kernel feature is missing."""

    exit_code = EXIT_ENVIRONMENT
