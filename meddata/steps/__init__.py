"""Steps: the contract every stage of a build follows (meddata.steps.base), compact
per-row state for global steps (meddata.steps.keys), and the named steps a recipe lists,
one module each, found by name through meddata.steps.registry."""

from meddata.steps.base import (
    BATCH_ROWS,
    DUCKDB_MEMORY,
    POSITION,
    Books,
    Ledger,
    Source,
    Step,
    StepError,
)
from meddata.steps.keys import (
    SeenKeys,
    SpilledArray,
    first_seen,
    key_hashes,
    seeded,
    seeded_array,
)

__all__ = ["BATCH_ROWS", "DUCKDB_MEMORY", "POSITION", "Books", "Ledger", "SeenKeys", "Source",
           "SpilledArray", "Step", "StepError", "first_seen", "key_hashes", "seeded",
           "seeded_array"]
