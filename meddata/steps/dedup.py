"""Exact and near-duplicate removal over canonical batches (recipe `dedup`, `meddata dedup`).

What is kept across batches is compact per-row state (meddata.minhash): an exact key (a
64-bit hash of the normalized text and gold answer), and for rows of at least
`min_tokens` tokens their shingle set and band hashes. Candidate pairs from grouped band
hashes are verified by exact Jaccard, and for MCQ and yes/no rows the normalized gold
answers must agree too. Clusters are the connected components (scipy.sparse.csgraph) of
exact and verified near pairs; each keeps one survivor by `survivor_key` (source priority,
has an answer, longest rationale, longest text, lowest content hash, id).

`against` earlier versions: each keeps a saved index of the same state (exact keys, band
hashes, shingles) in the store's cache (`.cache/dedup-indexes/<kind>/<name>/<id>/
dedup-<settings>.parquet`, not inside the immutable version), built once
and reused while the version and the settings are unchanged; rows of the new version that
duplicate a row of an earlier one are dropped as `duplicate_of_earlier`, without
re-clustering the earlier versions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meddata.minhash import (
    _U64,
    SURVIVOR_COLUMNS,
    MinHashSettings,
    candidate_pairs,
    compact_fingerprints,
    jaccard_pairs,
)
from meddata.steps.base import Books, Step, StepError
from meddata.steps.keys import SpilledArray, key_hashes
from meddata.steps.registry import setting

FINGERPRINT_ROWS = 65_536  # rows fingerprinted at a time (the text work is per frame)
REPORT_EXAMPLES = 1000  # dropped records listed in the manifest; all are in rejects.parquet


@dataclass
class DedupSettings(MinHashSettings):
    threshold: float = setting(0.65, "exact Jaccard of 3-token shingles that makes two rows "
                                     "near duplicates")
    ngram: int = setting(3, "shingle size in tokens (words; CJK characters)")
    num_perm: int = setting(128, "MinHash permutations")
    bands: int = setting(25, "LSH bands (bands x rows <= num_perm)")
    rows: int = setting(5, "rows per LSH band")
    min_tokens: int = setting(8, "shorter texts are deduplicated exactly, never by MinHash")
    seed: int = setting(1, "MinHash seed")
    source_priority: list[str] = setting([], "sources, best first: whose row survives")
    against: list[str] = setting([], "earlier canonical versions: rows that duplicate theirs "
                                     "are dropped too (a saved index of each, reused)")

    def fingerprint_settings(self) -> dict[str, Any]:
        """What an index's content depends on (source priority and threshold do not)."""
        return {"ngram": self.ngram, "num_perm": self.num_perm, "bands": self.bands,
                "rows": self.rows, "min_tokens": self.min_tokens, "seed": self.seed,
                "polars": pl.__version__, "format": 2}


DedupConfig = DedupSettings  # the name the library API has used


class Fingerprints:
    """Fingerprints of every row seen, batch after batch, spilled to `folder`; and the plan
    they lead to. What stays in memory is per-row fixed-size state (exact keys, cluster
    labels), never texts or per-row objects."""

    def __init__(self, config: DedupConfig, folder: Path):
        config.check()
        self.config, self.folder = config, Path(folder)
        tag = f"fp-{id(self)}"
        self.exact = SpilledArray(self.folder / f"{tag}-exact", _U64)
        self.answer = SpilledArray(self.folder / f"{tag}-answer", _U64)
        self.long = SpilledArray(self.folder / f"{tag}-long", bool)
        self.sizes = SpilledArray(self.folder / f"{tag}-sizes", np.int64)
        self.values = SpilledArray(self.folder / f"{tag}-values", _U64)
        self.bands = [SpilledArray(self.folder / f"{tag}-band{b}", _U64)
                      for b in range(config.bands)]
        self.survivor_files: list[Path] = []
        self.n = 0

    def add(self, compact: pa.Table) -> None:
        """Append the `compact` rows of a batch (its `compact_fingerprints`)."""
        self.exact.append(compact.column("exact").to_numpy())
        self.answer.append(compact.column("answer").to_numpy())
        long = compact.column("long").to_numpy()
        self.long.append(long)
        shingles = compact.column("shingles")
        self.sizes.append(pc.list_value_length(shingles).to_numpy()[long])
        self.values.append(pc.list_flatten(shingles).to_numpy())
        bands = pc.list_flatten(compact.column("bands")).to_numpy().reshape(
            -1, self.config.bands)
        for b, column in enumerate(self.bands):
            column.append(bands[:, b])
        path = self.folder / f"fp-{id(self)}-survivors-{len(self.survivor_files):06d}.parquet"
        pq.write_table(compact.select(SURVIVOR_COLUMNS), path)
        self.survivor_files.append(path)
        self.n += compact.num_rows

    def plan(self, against: list[DedupIndex] = ()) -> Plan:
        cfg, n = self.config, self.n
        exact = np.array(self.exact.array())
        answer = self.answer.array()
        long_rows = np.flatnonzero(self.long.array())
        offsets = np.zeros(len(long_rows) + 1, np.int64)
        np.cumsum(self.sizes.array(), out=offsets[1:])
        values = self.values.array()
        bands = [b.array() for b in self.bands]
        plan = Plan(n)
        # rows that duplicate an earlier version's rows
        for index in against:
            index.match(plan, exact, answer, long_rows, bands, values, offsets, cfg)
        alive = plan.reason == 0
        # exact groups: each row to the first row with the same key and answer
        _, first, inverse = np.unique(exact, return_index=True, return_inverse=True)
        first_of = first[inverse]
        del first, inverse
        dup = np.flatnonzero(alive & (first_of != np.arange(n)))
        edges_i, edges_j = [dup], [first_of[dup]]
        # near pairs, among the first row of each exact group only
        local = np.flatnonzero(alive[long_rows] & (first_of[long_rows] == long_rows))
        del first_of
        pairs = candidate_pairs([column[local] for column in bands])
        ci, cj = local[pairs[:, 0]], local[pairs[:, 1]]
        agree = answer[long_rows[ci]] == answer[long_rows[cj]]
        ci, cj = ci[agree], cj[agree]
        sims = jaccard_pairs(values, offsets, ci, values, offsets, cj)
        ok = sims >= cfg.threshold
        vi, vj, vs = long_rows[ci[ok]], long_rows[cj[ok]], sims[ok]
        edges_i.append(vi)
        edges_j.append(vj)
        best = np.zeros(n, np.float32)
        np.maximum.at(best, vi, vs)
        np.maximum.at(best, vj, vs)
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        ei, ej = np.concatenate(edges_i), np.concatenate(edges_j)
        graph = coo_matrix((np.ones(len(ei), np.int8), (ei, ej)), shape=(n, n))
        _, labels = connected_components(graph, directed=False)
        sizes = np.bincount(labels)
        members = np.flatnonzero(alive & (sizes[labels] > 1))
        ranked = pl.scan_parquet(self.survivor_files).with_row_index("row").filter(
            pl.col("row").is_in(pl.Series(members, dtype=pl.UInt32).implode())).collect() \
            .with_columns(label=pl.Series(labels[members])).sort(
                ["label", "rank", "no_answer", "rationale", "text", "raw_sha1", "id"]) \
            if len(members) else None
        firsts = ranked.unique("label", keep="first", maintain_order=True) \
            if ranked is not None else pl.DataFrame(
                schema={"label": pl.Int64, "row": pl.UInt32, "id": pl.String})
        survivor_of = np.full(len(sizes), -1, np.int64)
        survivor_of[firsts["label"].to_numpy()] = firsts["row"].to_numpy()
        plan.kept_ids = dict(zip(firsts["row"].to_list(), firsts["id"].to_list()))
        surv = survivor_of[labels[members]]
        dropped = members[members != surv]
        surv = survivor_of[labels[dropped]]
        is_exact = exact[dropped] == exact[surv]
        plan.reason[dropped] = np.where(is_exact, EXACT, NEAR)
        plan.kept[dropped] = surv
        plan.similarity[dropped] = np.where(is_exact, 1.0, best[dropped])
        plan.cluster_size[dropped] = sizes[labels[dropped]]
        plan.summary = {
            "rows_in": n, "rows_out": int((plan.reason == 0).sum()),
            "exact_duplicate": int((plan.reason == EXACT).sum()),
            "near_duplicate": int((plan.reason == NEAR).sum()),
            "duplicate_of_earlier": int((plan.reason == EARLIER).sum()),
            "clusters": int(len(firsts)), "candidate_pairs": int(len(pairs)),
            "verified_near_pairs": int(ok.sum()), "config": asdict(cfg),
            "against": [i.ref for i in against]}
        return plan


KEEP, EXACT, NEAR, EARLIER = 0, 1, 2, 3
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate", EARLIER: "duplicate_of_earlier"}


class Plan:
    """Per row: why it is dropped (0 = kept), the row it duplicates, the similarity."""

    def __init__(self, n: int):
        self.reason = np.zeros(n, np.int8)
        self.kept = np.full(n, -1, np.int64)
        self.similarity = np.zeros(n, np.float32)
        self.cluster_size = np.zeros(n, np.int32)
        self.earlier: dict[int, tuple[str, str, str]] = {}  # row -> (id, ref, how)
        self.kept_ids: dict[int, str] = {}  # survivor row -> its id
        self.summary: dict[str, Any] = {}

    def record(self, i: int, row_id: str) -> dict[str, Any]:
        """The dropped record of row i (its id given)."""
        code = int(self.reason[i])
        if code == EARLIER:
            kept, ref, how = self.earlier[i]
            return {"id": row_id, "reason": REASONS[code], "kept": kept, "against": ref,
                    "match": how, "similarity": float(self.similarity[i])}
        kept = self.kept_ids[int(self.kept[i])]
        return {"id": row_id, "reason": REASONS[code], "cluster": kept, "kept": kept,
                "similarity": round(float(self.similarity[i]), 6),
                "cluster_size": int(self.cluster_size[i])}



# ---- the index of an earlier version ------------------------------------------------------------------
class DedupIndex:
    """The dedup state of a published version, saved in the store's cache
    (`.cache/dedup-indexes/<kind>/<name>/<id>/`, never inside the immutable version) and
    reused while the version and the fingerprint settings are unchanged."""

    def __init__(self, version, config: DedupConfig):
        self.version, self.ref = version, version.ref
        settings = config.fingerprint_settings()
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.path = version.path.parents[2] / ".cache" / "dedup-indexes" / version.kind / \
            version.name / version.id / f"dedup-{digest}.parquet"
        self.built = False
        if not self.path.exists():
            self._build(config, settings)
            self.built = True

    def _build(self, config: DedupConfig, settings: dict[str, Any]) -> None:
        import pyarrow.parquet as pq

        store_root = self.version.path.parents[2]
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        if store_root.resolve() not in folder.resolve().parents:
            raise ValueError(f"{folder} leads outside the store")
        tmp = folder / f".{self.path.name}.tmp"
        schema = pa.schema([("id", pa.string()), ("exact", pa.uint64()),
                            ("answer", pa.uint64()), ("bands", pa.list_(pa.uint64())),
                            ("shingles", pa.list_(pa.uint64()))])
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in self.version.iter_batches(verify="full"):
                c = compact_fingerprints(pl.from_arrow(batch), config)
                no_bands = pa.scalar(None, pa.list_(pa.uint64()))  # a short row: exact only
                writer.write_table(pa.table({
                    "id": batch.column("id"), "exact": c.column("exact"),
                    "answer": c.column("answer"),
                    "bands": pc.if_else(c.column("long"), c.column("bands"), no_bands),
                    "shingles": c.column("shingles")}, schema=schema))
        tmp.rename(self.path)
        self.path.with_suffix(".json").write_text(json.dumps(
            {"version": self.ref, **settings}, indent=2))

    def match(self, plan: Plan, exact, answer, long_rows, bands, values, offsets,
              config: DedupConfig) -> None:
        """Mark the rows that duplicate a row of this version as EARLIER."""
        idx = pl.scan_parquet(self.path).with_row_index("irow")
        # exact: same key and answer
        new = pl.DataFrame({"row": np.arange(len(exact)), "exact": exact})
        hits = new.join(idx.select("irow", "exact", "id").collect(engine="streaming"),
                        on="exact").group_by("row").agg(pl.col("id").first()).sort("row")
        for row, kept in hits.iter_rows():
            if plan.reason[row] == 0:
                plan.reason[row], plan.similarity[row] = EARLIER, 1.0
                plan.earlier[row] = (kept, self.ref, "exact")
        # near: equal band hashes, then verification against the index's shingles
        if not len(long_rows):
            return
        found = []
        for b, column in enumerate(bands):  # one band at a time: a join on its hashes
            mine = pl.DataFrame({"lrow": np.arange(len(long_rows)), "h": np.asarray(column)})
            theirs = idx.filter(pl.col("bands").is_not_null()).select(
                "irow", h=pl.col("bands").list.get(b))
            found.append(mine.lazy().join(theirs, on="h").select("lrow", "irow")
                         .collect(engine="streaming"))
        cands = pl.concat(found).unique().sort("lrow", "irow")
        if not cands.height:
            return
        needed = cands["irow"].unique().sort()
        sub = idx.filter(pl.col("irow").is_in(needed.implode())).select(
            "irow", "id", "answer", "shingles").collect(engine="streaming").sort("irow")
        pos = np.searchsorted(sub["irow"].to_numpy(), cands["irow"].to_numpy())
        lrow = cands["lrow"].to_numpy()
        agree = sub["answer"].to_numpy()[pos] == answer[long_rows[lrow]]
        lrow, pos = lrow[agree], pos[agree]
        theirs_values = sub["shingles"].explode().drop_nulls().to_numpy().astype(_U64)
        theirs_offsets = np.r_[0, np.cumsum(sub["shingles"].list.len().to_numpy())].astype(
            np.int64)
        sims = jaccard_pairs(values, offsets, lrow, theirs_values, theirs_offsets, pos)
        ok = sims >= config.threshold
        ids = sub["id"]
        for lr, p, sim in zip(lrow[ok].tolist(), pos[ok].tolist(), sims[ok].tolist()):
            row = int(long_rows[lr])
            if plan.reason[row] == 0 or (plan.reason[row] == EARLIER and
                                         sim > plan.similarity[row] and
                                         plan.earlier[row][2] != "exact"):
                plan.reason[row], plan.similarity[row] = EARLIER, sim
                plan.earlier[row] = (ids[p], self.ref, "near")



# ---- steps ----------------------------------------------------------------------------------------------
CANONICAL_NEEDS = ("id", "source", "task", "question", "context", "options", "answer",
                   "rationale", "response", "raw_sha1")


class DedupStep(Step):
    """Exact and near duplicates removed; clusters and survivors recorded with reasons.

    Two-phase: `scan` fingerprints batches (the text work, on any worker), `plan` spills
    the fingerprints, finds candidate pairs by grouping band hashes, verifies them and
    picks survivors (on the driver), and `map` drops each batch's duplicates, looking its
    rows up by id (ids must be unique)."""

    name = "dedup"
    settings_class = DedupSettings
    needs = CANONICAL_NEEDS
    passes = 2
    parallel = True
    scan_rows = FINGERPRINT_ROWS  # polars' text work runs faster on larger frames

    def __init__(self, config: DedupConfig | None = None, against: list = ()):
        self.config = config or DedupConfig()
        self.config.check()
        self.against = list(against)
        self.found: Plan | None = None
        self.indexes: list[dict[str, Any]] = []
        self.listed: list[dict[str, Any]] = []
        self._keys = np.empty(0, _U64)   # sorted id hashes of the dropped rows
        self._rows = np.empty(0, np.int64)  # ... and their rows in the plan

    @classmethod
    def from_settings(cls, settings: DedupSettings, context) -> DedupStep:
        earlier = [context.store.resolve(ref) for ref in settings.against]
        for v in earlier:
            if v.kind != "canonical":
                raise ValueError(f"{v.ref}: dedup against takes canonical versions")
        return cls(settings, against=earlier)

    def parents(self) -> list[dict[str, Any]]:
        """The versions this step read, for the manifest's parents."""
        return [v.as_parent(role="dedup_against") for v in self.against]

    def scan(self, batch: pa.Table) -> pa.Table:
        return compact_fingerprints(pl.from_arrow(batch), self.config)

    def plan(self, compact: Iterator[pa.Table], spill_dir: Path) -> None:
        prints = Fingerprints(self.config, spill_dir)
        for part in compact:
            prints.add(part)
        indexes = [DedupIndex(v, self.config) for v in self.against]
        self.found = prints.plan(indexes)
        self.indexes = [{"version": i.ref, "index": i.path.name, "reused": not i.built}
                        for i in indexes]
        keys = key_hashes(pl.scan_parquet(prints.survivor_files).select("id").collect()
                          .to_series().to_arrow()) if prints.survivor_files else \
            np.empty(0, _U64)
        ordered = np.sort(keys)
        if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():
            raise StepError("dedup needs unique ids, and two rows share an id (or, rarely, "
                            "a 64-bit hash of their ids)")
        dropped = np.flatnonzero(self.found.reason)
        order = np.argsort(keys[dropped])
        self._keys, self._rows = keys[dropped][order], dropped[order]

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        keys = key_hashes(batch.column("id"))
        pos = np.minimum(np.searchsorted(self._keys, keys), max(len(self._keys) - 1, 0))
        hit = self._keys[pos] == keys if len(self._keys) else np.zeros(len(keys), bool)
        if not hit.any():
            return batch
        where = np.flatnonzero(hit)
        rows = self._rows[pos[where]]
        reasons = self.found.reason[rows]
        ids = batch.column("id").take(pa.array(where)).to_pylist()
        records = [self.found.record(int(i), row_id) for i, row_id in zip(rows, ids)]
        room = REPORT_EXAMPLES - len(self.listed)
        self.listed += records[:max(room, 0)]
        for code, reason in REASONS.items():
            sel = np.flatnonzero(reasons == code)
            if len(sel):
                books.drop(reason, rows=batch.take(pa.array(where[sel])),
                           details=[{k: v for k, v in records[k].items()
                                     if k not in ("id", "reason")} for k in sel])
        return batch.filter(pa.array(~hit))

    def take_state(self) -> list[dict[str, Any]]:
        state, self.listed = self.listed, []
        return state

    def merge_state(self, state: list[dict[str, Any]]) -> None:
        self.listed = (self.listed + state)[:REPORT_EXAMPLES]

    def close(self, books: Books) -> None:
        books.info["indexes"] = self.indexes

    def report(self) -> dict[str, Any]:
        if self.found is None:
            return {}
        return {"summary": self.found.summary, "dropped": self.listed,
                "dropped_listed": len(self.listed)}

    def report_config(self) -> dict[str, Any]:
        return {**asdict(self.config), "against": [v.ref for v in self.against]}


def dedup(rows: list[dict[str, Any]], config: DedupConfig | None = None,
          batch_rows: int = 8192
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, dropped records, summary) for rows in memory (ids must be unique), in
    batches of `batch_rows`."""
    from meddata.engines.local import run_list

    return run_list(DedupStep(config), rows, batch_rows)


STEP = DedupStep


