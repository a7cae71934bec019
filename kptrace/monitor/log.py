"""Structured logs: one JSON object a line on stderr (``time``, ``level``, ``msg``, then the event's fields),
what log collectors in a cluster parse without configuration."""

from __future__ import annotations

import json
import sys
import threading
import time

__all__ = ["Log"]

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Log:
    def __init__(self, level: str = "info", stream=None) -> None:
        self.threshold = _LEVELS[level]
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()  # watch threads and the check loop write at once: keep lines whole

    def __call__(self, level: str, msg: str, **fields) -> None:
        if _LEVELS[level] < self.threshold:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        line = json.dumps({"time": stamp, "level": level, "msg": msg, **fields}, default=str)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def debug(self, msg: str, **fields) -> None:
        self("debug", msg, **fields)

    def info(self, msg: str, **fields) -> None:
        self("info", msg, **fields)

    def warning(self, msg: str, **fields) -> None:
        self("warning", msg, **fields)

    def error(self, msg: str, **fields) -> None:
        self("error", msg, **fields)
