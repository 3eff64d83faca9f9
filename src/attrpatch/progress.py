"""Progress bars that a user sees on the terminal and that keep logs readable.

In a terminal `tqdm` draws its usual bar. Under Snakemake a job's stderr is its log file,
where tqdm's carriage-return frames pile up into one unreadable line and the terminal shows
nothing for minutes. There `tqdm` here writes a compact line (no carriage returns) at most
every `LINE_EVERY_S` seconds, plus the first and the finished frame, to the log and, when
the rule passes one (``ATTRPATCH_PROGRESS_FD``, the terminal's stderr duplicated by the
Snakefile), to the terminal too, prefixed with the job (``ATTRPATCH_JOB``).
"""
from __future__ import annotations

import os
import re
import sys
import time

from tqdm.auto import tqdm as _tqdm

LINE_EVERY_S = 20.0
_CONTROL = re.compile(r"\r|\x1b\[[0-9;]*[A-Za-z]")


class LineStream:
    """File-like sink for tqdm: each frame becomes one line, throttled."""

    def __init__(self, log=None, terminal_fd: int | None = None, job: str = "", every_s: float = LINE_EVERY_S):
        self.log = log if log is not None else sys.stderr
        self.job = job
        self.every_s = every_s
        self._last: dict[str, float] = {}       # bar description -> time of its last line
        self._finished: dict[str, bool] = {}    # bar description -> its 100% line was written
        self._term = None
        if terminal_fd is not None:
            try:
                self._term = os.fdopen(os.dup(terminal_fd), "w", buffering=1)
            except OSError:
                self._term = None

    def write(self, s: str) -> int:
        text = _CONTROL.sub("", s).strip()
        if not text:
            return len(s)
        key = text.split(": ", 1)[0] if ": " in text else ""
        now = time.monotonic()
        first, done = key not in self._last, bool(re.search(r"\b100%", text))
        finished_before, self._finished[key] = self._finished.get(key, False), done
        if (done and not finished_before) or first or now - self._last[key] >= self.every_s:
            self._last[key] = now
            self.log.write(text + "\n")
            self.log.flush()
            if self._term is not None:
                try:
                    self._term.write(f"[{self.job}] {text}\n" if self.job else text + "\n")
                except OSError:
                    self._term = None
        return len(s)

    def flush(self) -> None:
        self.log.flush()


_STREAM: LineStream | None = None


def stream():
    """Where bars write: stderr itself in a terminal, else the shared `LineStream`."""
    global _STREAM
    if sys.stderr.isatty():
        return sys.stderr
    if _STREAM is None or _STREAM.log is not sys.stderr:
        fd = os.environ.get("ATTRPATCH_PROGRESS_FD")
        _STREAM = LineStream(sys.stderr, int(fd) if fd and fd.isdigit() else None, os.environ.get("ATTRPATCH_JOB", ""))
    return _STREAM


def tqdm(*args, **kwargs):
    """`tqdm.auto.tqdm` writing to `stream()` (lines, not frames, outside a terminal)."""
    s = stream()
    kwargs.setdefault("file", s)
    if s is not sys.stderr:
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 100)
    return _tqdm(*args, **kwargs)
