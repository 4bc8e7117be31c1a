"""Compact per-row state for steps that need global knowledge: seeded 64-bit hashes, a set
of uint64 keys in sorted numpy runs, first-seen filtering, and 1-D arrays grown in a file and
read back memory-mapped. A step keeps these, never the rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa


def seeded(seed: int, *parts: str) -> int:
    """A deterministic 64-bit number from a seed and strings (no Python hash randomization)."""
    digest = hashlib.blake2b("\x1f".join((str(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def seeded_array(seed: int, tag: str, values: list[str]) -> np.ndarray:
    """`seeded(seed, tag, v)` for each value, as uint64."""
    prefix = f"{seed}\x1f{tag}\x1f"
    blake = hashlib.blake2b
    return np.fromiter((int.from_bytes(blake((prefix + v).encode(), digest_size=8).digest(),
                                       "big") for v in values),
                       dtype=np.uint64, count=len(values))


_SCALE = float(2**64)


def fractions(seed: int, tag: str, ids: list[str]) -> np.ndarray:
    """A number in [0, 1) per id, from its seeded hash."""
    return seeded_array(seed, tag, ids).astype(np.float64) / _SCALE


class SeenKeys:
    """A set of uint64 keys kept as sorted numpy runs, merged like a binary counter: 8 bytes
    a key, O(log n) runs to probe, O(n log n) in all."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []  # sorted uint64 arrays, longest first

    def contains(self, keys: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(keys), dtype=bool)
        for run_ in self.runs:
            pos = np.minimum(np.searchsorted(run_, keys), len(run_) - 1)
            hit |= run_[pos] == keys
        return hit

    def add(self, keys: np.ndarray) -> None:
        run_ = np.sort(keys)
        while self.runs and len(self.runs[-1]) <= len(run_):
            run_ = np.sort(np.concatenate([self.runs.pop(), run_]), kind="stable")
        if len(run_):
            self.runs.append(run_)


def key_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of string values (polars' hash, stable within a run)."""
    import polars as pl

    return pl.Series(values).hash().to_numpy()


def first_seen(keys: np.ndarray, seen: SeenKeys) -> np.ndarray:
    """For each key: True where it was not in `seen` nor earlier in `keys`; adds them all."""
    import polars as pl

    fresh = ~seen.contains(keys) & pl.Series(keys).is_first_distinct().to_numpy()
    seen.add(keys[fresh])
    return fresh


class SpilledArray:
    """A 1-D array grown batch by batch in a file and read back as a memory map: the state
    of millions of rows is kept on disk, and only the parts a step touches are paged in."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.n = path, np.dtype(dtype), 0
        self.file = open(path, "wb")

    def append(self, values: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.n += len(values)

    def array(self) -> np.ndarray:
        self.file.close()
        if not self.n:
            return np.empty(0, self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n,))
