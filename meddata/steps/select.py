"""Select: the recipe's source rows, by split, subset, weight and limit, each id once."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meddata.steps.base import Books, Step
from meddata.steps.keys import SeenKeys, first_seen, fractions, key_hashes, seeded_array

SPEC = "_spec"      # the recipe source a row came from (added by the reader)


class Select(Step):
    """The recipe's source rows: by split (default: every split but `test`), subset, weight
    and limit, each id once (the first source that has it wins).

    With several sources or a limit it is two-phase: `scan` gives each row that passes the
    split, subset and weight filters as (source, id hash, limit hash); `plan` finds, in
    input order, the ids an earlier source already had and each limited source's threshold
    (the limit keeps the rows with the lowest seeded hashes of their ids); `map` filters.
    (Within one source, a canonical version, ids are unique.)"""

    name = "select"
    needs = ("id", "split", "subset", SPEC)
    replayable = True
    parallel = True

    def __init__(self, specs: list, seed: int):
        self.specs, self.seed = specs, seed
        limited = any(s.limit is not None for s in specs)
        self.passes = 2 if limited or len(specs) > 1 else 1
        self.duplicates: dict[int, np.ndarray] = {}  # source -> sorted id hashes to drop
        self.thresholds: dict[int, np.uint64] = {}

    def _filter(self, batch: pa.RecordBatch | pa.Table, books: Books | None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(each row's source index, mask of the rows the filters keep)."""
        spec_of = batch.column(SPEC).to_numpy()
        keep = np.ones(batch.num_rows, bool)
        split, subset = batch.column("split"), batch.column("subset")

        def drop(mask: np.ndarray, reason: str) -> None:
            gone = keep & mask
            if books is not None:
                books.drop(reason, int(gone.sum()))
            keep[gone] = False

        def mask_of(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
            return values.fill_null(False).to_numpy(zero_copy_only=False)

        for i in np.unique(spec_of):
            spec, mine = self.specs[i], spec_of == i
            if spec.split is not None:
                drop(mine & ~mask_of(pc.is_in(split, pa.array(spec.split))),
                     "split_not_selected")
            else:
                drop(mine & mask_of(pc.equal(split, "test")), "test_split")
            if spec.subset is not None:
                drop(mine & ~mask_of(pc.equal(subset, spec.subset)), "subset_not_selected")
            if spec.weight < 1:
                where = np.flatnonzero(keep & mine)
                frac = fractions(self.seed, "weight", batch.column("id").take(
                    pa.array(where)).to_pylist())
                out = np.zeros(batch.num_rows, bool)
                out[where[frac >= spec.weight]] = True
                drop(out, "weight_sampled_out")
        return spec_of, keep

    def _limit_hashes(self, batch, where: np.ndarray) -> np.ndarray:
        return seeded_array(self.seed, "limit", batch.column("id").take(
            pa.array(where)).to_pylist())

    def scan(self, batch: pa.Table) -> pa.Table:
        spec_of, keep = self._filter(batch, None)
        where = np.flatnonzero(keep)
        limited = np.array([s.limit is not None for s in self.specs])[spec_of[where]]
        limit = np.zeros(len(where), np.uint64)
        limit[limited] = self._limit_hashes(batch, where[limited])
        return pa.table({"spec": spec_of[where],
                         "key": key_hashes(batch.column("id").take(pa.array(where))),
                         "limit": limit})

    def plan(self, compact: Iterator[pa.Table], spill_dir) -> None:
        seen = SeenKeys()
        duplicates: dict[int, list[np.ndarray]] = {}
        hashes: dict[int, list[np.ndarray]] = {}
        for part in compact:
            spec_of, keys = part.column("spec").to_numpy(), part.column("key").to_numpy()
            fresh = first_seen(keys, seen)
            limit = part.column("limit").to_numpy()
            for i in np.unique(spec_of):
                mine = spec_of == i
                if (mine & ~fresh).any():
                    duplicates.setdefault(int(i), []).append(keys[mine & ~fresh])
                if self.specs[i].limit is not None:
                    hashes.setdefault(int(i), []).append(limit[mine & fresh])
        self.duplicates = {i: np.unique(np.concatenate(k)) for i, k in duplicates.items()}
        self.thresholds = {}
        for i, parts in hashes.items():
            h, limit = np.concatenate(parts), self.specs[i].limit
            if len(h) > limit:
                self.thresholds[i] = np.partition(h, limit - 1)[limit - 1]  # limit-th lowest

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        spec_of, keep = self._filter(batch, books)
        if self.duplicates and keep.any():
            where = np.flatnonzero(keep)
            keys = key_hashes(batch.column("id").take(pa.array(where)))
            dup = np.zeros(batch.num_rows, bool)
            for i, known in self.duplicates.items():
                mine = spec_of[where] == i
                dup[where[mine]] = np.isin(keys[mine], known)
            books.drop("duplicate_id", int(dup.sum()))
            keep &= ~dup
        if self.thresholds and keep.any():
            where = np.flatnonzero(keep)
            over = np.zeros(batch.num_rows, bool)
            for i, threshold in self.thresholds.items():
                mine = where[spec_of[where] == i]
                over[mine[self._limit_hashes(batch, mine) > threshold]] = True
            books.drop("over_limit", int(over.sum()))
            keep &= ~over
        if not keep.any():
            return None
        out = batch if keep.all() else batch.filter(pa.array(keep))
        return out.drop_columns([SPEC])
