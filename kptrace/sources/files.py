"""Read a dump from a file or stdin, refusing what is clearly not text before any parser sees it."""

from __future__ import annotations

import os
import sys

from kptrace.errors import Diagnostic, InputError, ParseError, binary_data
from kptrace.model.source import SourceText

__all__ = ["DEFAULT_MAX_BYTES", "read_source"]

#: The largest real dumps (5,000 nodes, 10k Services x 10 endpoints) are about 50 MB; a file ten times
#: that is far more likely a mistake (a core file, a pcap, a log) than a node's rules.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def _human(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n} bytes"


def read_source(path: str, *, max_bytes: int = DEFAULT_MAX_BYTES, tool: str = "iptables-save") -> SourceText:
    """Read ``path`` (``-`` is stdin) as text: the output of ``tool``, as the hints say.

    Errors: a missing or unreadable file, a directory, a file over ``max_bytes``, binary data (a NUL
    byte, reported at its line and column), an empty input.
    """
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            if os.path.isdir(path):
                raise InputError(f"{path}: is a directory, not a dump", hint=f"pass the {tool} output file")
            size = os.path.getsize(path)
            if size > max_bytes:
                raise InputError(
                    f"{path}: {_human(size)} is larger than the {_human(max_bytes)} limit",
                    hint="real dumps of 10k Services are about 50 MB; check this is the right file, "
                    "or pass --max-size to read it anyway",
                )
            with open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file", hint=f"pass the output of `{tool}`, or - for stdin") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied", hint="check the file's permissions (or run with sudo)") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a dump") from None
    if len(data) > max_bytes:
        raise InputError(f"{name}: more than {_human(max_bytes)} of input", hint="pass --max-size to read it anyway")
    if not data.strip():
        raise InputError(f"{name}: empty input",
                         hint=f"expected the output of `{tool}` (is the command's output redirected?)")
    nul = data.find(b"\0", 0, 1 << 20)
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        col = nul - (data.rfind(b"\n", 0, nul) + 1) + 1
        raise ParseError([binary_data(name, line, col, "a text dump", tool)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        bad_line = data.split(b"\n", line)[line - 1].decode("utf-8", "replace") if line else ""
        raise ParseError([Diagnostic(
            "error", f"not UTF-8 text (byte 0x{data[e.start]:02x})", name, line, col, bad_line,
            hint=f"expected the text output of `{tool}`",
        )]) from None
    return SourceText(name, text)
