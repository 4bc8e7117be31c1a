"""Progress bars for long work: one bar at a time, each on its own line, on stderr, and
none at all under --quiet."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def bar(desc: str, total: int | None = None, unit: str = " rows", enabled: bool = True,
        position: int | None = None) -> Iterator:
    """A tqdm bar that always ends its line (so the next one starts on a fresh line)."""
    from tqdm.auto import tqdm

    b = tqdm(desc=desc, total=total, unit=unit, disable=not enabled, mininterval=0.5,
             file=sys.stderr, leave=position is None, position=position, dynamic_ncols=True)
    try:
        yield b
    finally:
        b.close()
