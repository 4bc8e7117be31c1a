"""Split: train / validation by a seeded hash of the id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from meddata.steps.base import Books, Step
from meddata.steps.keys import fractions


class Split(Step):
    """train / validation by a seeded hash of the id (`validation_ratio` of the rows)."""

    name = "split"
    needs = ("id", "split")
    parallel = True

    def __init__(self, ratio: float, seed: int):
        self.ratio, self.seed = ratio, seed
        self.validation = 0

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        if self.ratio:
            val = fractions(self.seed, "split", batch.column("id").to_pylist()) < self.ratio
        else:
            val = np.zeros(batch.num_rows, bool)
        self.validation += int(val.sum())
        split = pa.array(np.where(val, "validation", "train"), pa.string())
        return batch.set_column(batch.schema.get_field_index("split"), "split", split)

    def take_state(self) -> int:
        state, self.validation = self.validation, 0
        return state

    def merge_state(self, state: int) -> None:
        self.validation += state

    def close(self, books: Books) -> None:
        books.info["validation"] = self.validation
