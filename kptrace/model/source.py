"""One input's raw text and the name errors use for it: what sources/ read and parsers/ take."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SourceText"]


@dataclass(frozen=True, slots=True)
class SourceText:
    """Raw text of one input and the name errors use for it (the path, or ``<stdin>``)."""

    name: str
    text: str
