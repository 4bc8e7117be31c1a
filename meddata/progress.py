"""Progress bars for long work: one bar at a time, each on its own line, on stderr, and
none at all under --quiet.

On a terminal a bar is tqdm's (a terminal that reports no width gets 80 columns rather than
an empty line per bar: tqdm then believes
every bar is below the screen). When stderr is not a terminal (a log file, a pipe, CI), nothing
redraws in place: a bar is one plain line per update interval (MEDDATA_PROGRESS_INTERVAL
seconds, 30 by default) and one when it ends, with no carriage returns or escapes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

INTERVAL_ENV = "MEDDATA_PROGRESS_INTERVAL"


def interactive(stream=None) -> bool:
    """Whether `stream` (stderr by default) is a terminal that can redraw a line."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _columns(stream) -> int | None:
    """The terminal's width, None where it reports none (then tqdm gets a fixed width)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or None
    except (AttributeError, OSError, ValueError):
        return None


class LineBar:
    """tqdm's interface (update, n, total, refresh, set_postfix, close) as log lines:
    `desc: n/total unit (p %) [elapsed]`, at most one per interval, and a last one at close."""

    def __init__(self, desc: str, total: int | None, unit: str, enabled: bool, stream,
                 interval: float):
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, enabled
        self.stream, self.interval = stream, interval
        self.n = 0
        self.postfix = ""
        self.start = self._last = time.monotonic()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh(force=False)

    def set_postfix(self, **kwargs) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= self.interval):
            self._last = now
            self._write(now)

    def _write(self, now: float) -> None:
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        self.stream.write(f"{self.desc}: {done}{self.unit}{pct} [{now - self.start:.0f} s"
                          f"{extra}]\n")
        self.stream.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.enabled:
                self._write(time.monotonic())


@contextlib.contextmanager
def bar(desc: str, total: int | None = None, unit: str = " rows", enabled: bool = True,
        position: int | None = None) -> Iterator:
    """A progress bar on stderr that always ends its line (so the next one starts on a
    fresh line): tqdm on a terminal, LineBar elsewhere."""
    stream = sys.stderr
    if not interactive(stream):
        b = LineBar(desc, total, unit, enabled, stream,
                    float(os.environ.get(INTERVAL_ENV) or 30))
    else:
        from tqdm.auto import tqdm

        columns = _columns(stream)
        b = tqdm(desc=desc, total=total, unit=unit, disable=not enabled, mininterval=0.5,
                 file=stream, leave=position is None, position=position,
                 dynamic_ncols=columns is not None, ncols=None if columns else 80,
                 nrows=None if columns else 20)
    try:
        yield b
    finally:
        b.close()
