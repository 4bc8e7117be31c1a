"""Exact and near-duplicate removal, and decontamination against benchmarks (two steps over
canonical batches; docs/dedup.md has the figures behind every default).

Comparison text of a row: the question, then for MCQ the option texts, each normalized and
sorted (so option order does not matter), for yes/no, instructions and documents the
context. The key is that text normalized (meddata.text.normalize_key_expr: NFKC, lower
case, punctuation and symbols removed, whitespace collapsed, digits kept) and its tokens
come from the one mixed-script tokenizer (Latin/digit runs are words, each CJK character
is a token). Everything is computed per batch in polars and numpy; what is kept across
batches is compact per-row state:

- exact key: a 64-bit hash of the key and the normalized gold answer (MCQ, yes/no);
- near duplicates: the row's shingles of 3 tokens (3 words in English, 3 characters in
  Chinese) hashed to 64 bits, as one sorted array plus offsets; a MinHash signature of
  `num_perm` values, kept only as `bands` band hashes of `rows` values each. Rows of
  fewer than `min_tokens` tokens are deduplicated exactly, never by MinHash.
- candidate pairs come from grouping equal band hashes (a sort per band, pairs inside each
  run of equal values), the shape that NeMo Curator and text-dedup on Spark take; each
  is verified with the exact Jaccard of the two shingle sets (vectorized), and for MCQ and
  yes/no rows the normalized gold answers must agree too.
- clusters are the connected components (scipy.sparse.csgraph) of exact and verified near
  pairs; each keeps one survivor by `survivor_key` (source priority, has an answer,
  longest rationale, longest text, lowest content hash, id).

`--against` earlier versions: each keeps a saved index of the same state (exact keys, band
hashes, shingles) in its version folder (`indexes/dedup-<settings>.parquet`), built once
and reused while the version and the settings are unchanged; rows of the new version
that duplicate a row of an earlier one are dropped as `duplicate_of_earlier`, without
re-clustering the earlier versions.

Decontamination drops a training row that shares an English word `ngram_en`-gram or a
Chinese character `ngram_zh`-gram with a benchmark item (question, options and answer),
whose whole-item MinHash similarity to one (verified exact Jaccard) reaches `threshold`,
or, for PubMedQA, whose PMID or title (its question) is a benchmark's. The benchmark side
is small and held in memory; training rows stream batch by batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from meddata.steps import Books, Step, StepError, key_hashes
from meddata.text import TOKEN_PATTERN, normalize_key, normalize_key_expr

FINGERPRINT_ROWS = 65_536  # rows fingerprinted at a time (the text work is per frame)
RUN_PAIRS_CAP = 64      # a band run larger than this pairs each member with its neighbours
VERIFY_CHUNK = 200_000  # candidate pairs verified at a time
REPORT_EXAMPLES = 1000  # dropped records listed in the manifest; all are in rejects.parquet
LIST_BATCH_ROWS = 8192  # batch size of `dedup` and `decontaminate` over rows in memory
_U64 = np.uint64
_MIX1, _MIX2, _PRIME = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB), \
    _U64(0x100000001B3)


@dataclass
class DedupConfig:
    threshold: float = 0.65         # exact Jaccard of 3-token shingles to call rows duplicates
    ngram: int = 3                  # shingle size in tokens
    num_perm: int = 128
    bands: int = 25
    rows: int = 5                   # bands * rows <= num_perm
    min_tokens: int = 8             # shorter texts are deduplicated exactly only
    seed: int = 1
    source_priority: list[str] = field(default_factory=list)  # earlier wins

    def check(self) -> None:
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm "
                             f"{self.num_perm}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    def fingerprint_settings(self) -> dict[str, Any]:
        """What an index's content depends on (source priority and threshold do not)."""
        return {"ngram": self.ngram, "num_perm": self.num_perm, "bands": self.bands,
                "rows": self.rows, "min_tokens": self.min_tokens, "seed": self.seed,
                "polars": pl.__version__, "format": 2}


@dataclass
class DecontamConfig:
    ngram_en: int = 8               # English word n-grams over question, options, answer
    ngram_zh: int = 13              # Chinese character n-grams
    threshold: float = 0.8          # whole-item MinHash, verified with exact Jaccard
    num_perm: int = 128
    bands: int = 20
    rows: int = 6
    min_tokens: int = 8
    seed: int = 1


# ---- hashing --------------------------------------------------------------------------------------
def _fmix(h: np.ndarray) -> np.ndarray:
    """A 64-bit finalizer (splitmix64), vectorized."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> _U64(30))) * _MIX1
        h = (h ^ (h >> _U64(27))) * _MIX2
        return h ^ (h >> _U64(31))


def shingle_sets(token_lists: pl.Series, n: int | np.ndarray, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets): each row's unique, sorted 64-bit hashes of its n-token shingles,
    row i's in values[offsets[i]:offsets[i + 1]]. `n` may differ per row; a row with fewer
    than n tokens has one shingle of all of them, an empty row none."""
    lens = token_lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    n_rows = len(lens)
    ns = np.full(n_rows, n, dtype=np.int64) if np.isscalar(n) else np.asarray(n, np.int64)
    flat = token_lists.explode().drop_nulls().hash(seed=seed).to_numpy()
    if not len(flat):
        return np.empty(0, _U64), np.zeros(n_rows + 1, np.int64)
    starts = np.zeros(n_rows, np.int64)
    np.cumsum(lens[:-1], out=starts[1:])
    row = np.repeat(np.arange(n_rows), lens)
    pos = np.arange(len(flat)) - starts[row]
    width = np.minimum(ns, lens)[row]
    h = flat.copy()
    with np.errstate(over="ignore"):
        for k in range(1, int(width.max())):
            take = k < width
            nxt = flat[np.minimum(np.arange(len(flat)) + k, len(flat) - 1)]
            h = np.where(take, (h * _PRIME) ^ nxt, h)
    h = _fmix(h)
    keep = pos <= (lens[row] - width)
    row, h = row[keep], h[keep]
    order = np.lexsort((h, row))
    row, h = row[order], h[order]
    fresh = np.ones(len(h), bool)
    fresh[1:] = (h[1:] != h[:-1]) | (row[1:] != row[:-1])
    row, h = row[fresh], h[fresh]
    offsets = np.searchsorted(row, np.arange(n_rows + 1))
    return h, offsets.astype(np.int64)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    a = (rng.randint(0, 1 << 62, num_perm, dtype=_U64) << _U64(1)) | _U64(1)
    b = rng.randint(0, 1 << 62, num_perm, dtype=_U64)
    return a, b


def signatures(values: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int,
               block_rows: int = 512) -> np.ndarray:
    """MinHash signatures (rows x num_perm, uint32) of shingle sets: h -> top 32 bits of
    (a * h + b) mod 2^64 with odd a, then the min per row. Computed `block_rows` rows at a
    time in a (permutations x shingles) layout, so the min runs along contiguous memory
    (3x faster than the row-major layout), and the min is taken over the full 64 bits
    before the shift (the same top bits, fewer passes). A row with no shingles gets the
    all-max signature."""
    a, b = _permutations(num_perm, seed)
    n_rows = len(offsets) - 1
    sig = np.full((n_rows, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    for r0 in range(0, n_rows, block_rows):
        r1 = min(n_rows, r0 + block_rows)
        s, e = offsets[r0], offsets[r1]
        if e == s:
            continue
        with np.errstate(over="ignore"):
            phv = a[:, None] * np.asarray(values[s:e])[None, :]
            phv += b[:, None]
        starts = offsets[r0:r1] - s
        filled = starts < offsets[r0 + 1:r1 + 1] - s
        mins = np.minimum.reduceat(phv, np.minimum(starts, e - s - 1), axis=1)
        sig[r0:r1][filled] = (mins.T[filled] >> _U64(32)).astype(np.uint32)
    return sig


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per band of `rows` signature values (rows x bands)."""
    out = np.empty((len(sig), bands), dtype=_U64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(len(sig), _U64(band + 1) * _MIX2, dtype=_U64)
            for k in range(rows):
                h = (h * _PRIME) ^ sig[:, band * rows + k].astype(_U64)
            out[:, band] = _fmix(h)
    return out


# ---- candidate pairs and verification --------------------------------------------------------------
def _run_pairs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of positions inside runs [start, start + size): every pair for runs up to
    RUN_PAIRS_CAP, else each member with the run's first and with its successor."""
    out_i, out_j = [], []
    small = sizes <= RUN_PAIRS_CAP
    for m in np.unique(sizes[small]):
        s = starts[small & (sizes == m)]
        ti, tj = np.triu_indices(int(m), 1)
        out_i.append((s[:, None] + ti[None, :]).ravel())
        out_j.append((s[:, None] + tj[None, :]).ravel())
    for s, m in zip(starts[~small], sizes[~small]):
        members = np.arange(s + 1, s + m)
        out_i += [np.full(m - 1, s), members[:-1]]
        out_j += [members, members[1:]]
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def candidate_pairs(bands: list[np.ndarray]) -> np.ndarray:
    """(k, 2) int64 pairs (i < j) of rows that share at least one band hash, unique; one
    array of hashes per band (rows in the same order in each)."""
    n = len(bands[0]) if len(bands) else 0
    found = []
    for column in bands:
        column = np.asarray(column)
        order = np.argsort(column, kind="stable")
        vals = column[order]
        edge = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1], True])
        starts, sizes = edge[:-1], np.diff(edge)
        multi = sizes > 1
        pi, pj = _run_pairs(starts[multi], sizes[multi])
        if len(pi):
            a, b = order[pi], order[pj]
            found.append(np.minimum(a, b) * n + np.maximum(a, b))
        del order, vals
    if not found:
        return np.empty((0, 2), np.int64)
    keys = np.unique(np.concatenate(found))
    return np.stack([keys // n, keys % n], axis=1)


def _gather(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """The concatenated sets of `rows`, and each one's length."""
    sizes = offsets[rows + 1] - offsets[rows]
    total = int(sizes.sum())
    shift = np.repeat(offsets[rows] - np.r_[0, np.cumsum(sizes)[:-1]], sizes)
    return values[np.arange(total) + shift], sizes


def jaccard_pairs(va: np.ndarray, oa: np.ndarray, ia: np.ndarray,
                  vb: np.ndarray, ob: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Exact Jaccard of set ia[k] (in va/oa) and set ib[k] (in vb/ob), for every k,
    vectorized: each set's values are tagged with the pair number in the high bits (40 bits
    of the hash are kept, so a pair's sets stay sorted and disjoint from other pairs')."""
    out = np.empty(len(ia), dtype=np.float64)
    for s in range(0, len(ia), VERIFY_CHUNK):
        a_rows, b_rows = ia[s:s + VERIFY_CHUNK], ib[s:s + VERIFY_CHUNK]
        fa, sa = _gather(va, oa, a_rows)
        fb, sb = _gather(vb, ob, b_rows)
        pair = np.arange(len(a_rows), dtype=_U64)
        ka = (np.repeat(pair, sa) << _U64(40)) | (fa >> _U64(24))
        kb = (np.repeat(pair, sb) << _U64(40)) | (fb >> _U64(24))
        pos = np.minimum(np.searchsorted(kb, ka), max(len(kb) - 1, 0))
        hit = (kb[pos] == ka) if len(kb) else np.zeros(len(ka), bool)
        inter = np.bincount(np.repeat(np.arange(len(a_rows)), sa)[hit],
                            minlength=len(a_rows))
        union = sa + sb - inter
        out[s:s + len(a_rows)] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return out


def near_equal_many(a: list[str | None], b: list[str | None], threshold: float,
                    n: int = 3) -> np.ndarray:
    """meddata.text.near_equal for many pairs at once: a[k] and b[k] are near equal when their
    normalized texts are equal or the Jaccard of their n-token shingles reaches `threshold`
    (two texts without tokens are equal)."""
    frame = pl.DataFrame({"a": a, "b": b}, schema={"a": pl.String, "b": pl.String}).select(
        a=normalize_key_expr(pl.col("a")), b=normalize_key_expr(pl.col("b")))
    same = (frame["a"] == frame["b"]).to_numpy()
    va, oa = shingle_sets(frame["a"].str.extract_all(TOKEN_PATTERN), n)
    vb, ob = shingle_sets(frame["b"].str.extract_all(TOKEN_PATTERN), n)
    idx = np.arange(len(a))
    return same | (jaccard_pairs(va, oa, idx, vb, ob, idx) >= threshold)


# ---- per-row state --------------------------------------------------------------------------------
def item_frame(df: pl.DataFrame) -> pl.DataFrame:
    """key, answer (normalized gold for MCQ and yes/no, else null) and tokens of each row."""
    task = pl.col("task")
    opts = pl.col("options").list.eval(
        normalize_key_expr(pl.element().struct.field("text"))).list.sort().list.join(" ")
    second = pl.when(task == "mcq").then(opts).when(
        task.is_in(["yes_no", "instruction", "document"])).then(pl.col("context"))
    text = pl.concat_str([pl.col("question").fill_null(""), second.fill_null("")],
                         separator="\n")
    return df.select(
        key=normalize_key_expr(text),
        answer=pl.when(task.is_in(["mcq", "yes_no"])).then(normalize_key_expr(pl.col("answer"))),
    ).with_columns(tokens=pl.col("key").str.extract_all(TOKEN_PATTERN))


def _hash_strings(s: pl.Series, seed: int) -> np.ndarray:
    return s.fill_null("\x00<null>").hash(seed=seed).to_numpy()


@dataclass
class Fingerprint:
    """Compact state of a batch of rows for dedup."""

    exact: np.ndarray            # uint64, key + answer
    answer: np.ndarray           # uint64, normalized gold answer (a fixed value when none)
    long: np.ndarray             # bool, enough tokens for MinHash
    bands: np.ndarray            # (long rows x bands) uint64
    values: np.ndarray           # shingle sets of the long rows
    offsets: np.ndarray


def fingerprint(df: pl.DataFrame, config: DedupConfig) -> Fingerprint:
    items = item_frame(df)
    exact = _fmix(_hash_strings(items["key"], 11) ^ (_hash_strings(items["answer"], 13)
                                                     * _PRIME))
    long = (items["tokens"].list.len().fill_null(0) >= config.min_tokens).to_numpy()
    values, offsets = shingle_sets(items["tokens"].filter(pl.Series(long)), config.ngram)
    sig = signatures(values, offsets, config.num_perm, config.seed)
    return Fingerprint(exact, _hash_strings(items["answer"], 13), long,
                       band_hashes(sig, config.bands, config.rows), values, offsets)


def survivor_frame(df: pl.DataFrame, priority: list[str]) -> pl.DataFrame:
    """The columns `survivor_key` sorts by, per row (lower sorts first)."""
    rank = pl.col("source").replace_strict({s: i for i, s in enumerate(priority)},
                                           default=len(priority), return_dtype=pl.Int32)
    has_answer = (pl.col("answer").fill_null("") != "") | (pl.col("response").fill_null("") != "")
    text_len = sum(pl.col(c).fill_null("").str.len_chars()
                   for c in ("question", "context", "response"))
    return df.select(rank=rank, no_answer=(~has_answer).cast(pl.Int8),
                     rationale=-pl.col("rationale").fill_null("").str.len_chars().cast(pl.Int64),
                     text=-text_len.cast(pl.Int64), raw_sha1=pl.col("raw_sha1"),
                     id=pl.col("id"))


def survivor_key(row: dict[str, Any], priority: list[str]) -> tuple:
    """Lower sorts first: source priority, has an answer, longest rationale, longest text,
    lowest content hash, id. (The row form of `survivor_frame`.)"""
    rank = priority.index(row["source"]) if row["source"] in priority else len(priority)
    return (rank, 0 if row.get("answer") or row.get("response") else 1,
            -len(row.get("rationale") or ""), -len(row.get("question") or "") - len(
                row.get("context") or "") - len(row.get("response") or ""), row["raw_sha1"],
            row["id"])


SURVIVOR_COLUMNS = ["rank", "no_answer", "rationale", "text", "raw_sha1", "id"]


def compact_fingerprints(df: pl.DataFrame, config: DedupConfig) -> pa.Table:
    """A batch's dedup state as one row per input row: exact and answer keys, whether it is
    long enough for MinHash, its band hashes and shingle set (empty when short), and the
    columns survivors are chosen by. What a worker sends to the driver; no texts."""
    fp = fingerprint(df, config)
    n = df.height
    long_sizes = np.diff(fp.offsets)
    sizes = np.zeros(n, np.int64)
    sizes[fp.long] = long_sizes
    shingle_offsets = np.zeros(n + 1, np.int32)
    np.cumsum(sizes, out=shingle_offsets[1:])
    band_offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.where(fp.long, config.bands, 0), out=band_offsets[1:])
    survivors = survivor_frame(df, config.source_priority).to_arrow()
    return pa.table({
        "exact": fp.exact, "answer": fp.answer, "long": fp.long,
        "bands": pa.ListArray.from_arrays(pa.array(band_offsets),
                                          pa.array(fp.bands.ravel(), pa.uint64())),
        "shingles": pa.ListArray.from_arrays(pa.array(shingle_offsets),
                                             pa.array(fp.values, pa.uint64())),
        **{c: survivors.column(c) for c in SURVIVOR_COLUMNS}})


class _Spilled:
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


class Fingerprints:
    """Fingerprints of every row seen, batch after batch, spilled to `folder`; and the plan
    they lead to. What stays in memory is per-row fixed-size state (exact keys, cluster
    labels), never texts or per-row objects."""

    def __init__(self, config: DedupConfig, folder: Path):
        config.check()
        self.config, self.folder = config, Path(folder)
        tag = f"fp-{id(self)}"
        self.exact = _Spilled(self.folder / f"{tag}-exact", _U64)
        self.answer = _Spilled(self.folder / f"{tag}-answer", _U64)
        self.long = _Spilled(self.folder / f"{tag}-long", bool)
        self.sizes = _Spilled(self.folder / f"{tag}-sizes", np.int64)
        self.values = _Spilled(self.folder / f"{tag}-values", _U64)
        self.bands = [_Spilled(self.folder / f"{tag}-band{b}", _U64)
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
    """The dedup state of a published version, saved in its folder and reused while the
    version (immutable) and the fingerprint settings are unchanged."""

    def __init__(self, version, config: DedupConfig):
        self.version, self.ref = version, version.ref
        settings = config.fingerprint_settings()
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.path = version.path / "indexes" / f"dedup-{digest}.parquet"
        self.built = False
        if not self.path.exists():
            self._build(config, settings)
            self.built = True

    def _build(self, config: DedupConfig, settings: dict[str, Any]) -> None:
        import pyarrow.parquet as pq

        store_root = self.version.path.parents[2]
        folder = self.path.parent
        folder.mkdir(exist_ok=True)
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


def decontam_text_expr() -> pl.Expr:
    """Question, options and answer, normalized: what a benchmark item shows."""
    opts = pl.col("options").list.eval(pl.element().struct.field("text")).list.join("\n")
    return normalize_key_expr(pl.concat_str(
        [pl.col("question").fill_null(""), opts.fill_null(""), pl.col("answer").fill_null("")],
        separator="\n"))


def _pmid() -> pl.Expr:
    """PubMedQA rows' PMID (from meta), null for other sources."""
    return pl.when(pl.col("source") == "pubmedqa").then(
        pl.col("meta").str.json_path_match("$.pmid")).alias("pmid")


class Benchmark:
    """The benchmark side of decontamination, in memory (benchmarks are small)."""

    def __init__(self, versions: list, config: DecontamConfig):
        self.config = config
        frames = [pl.from_arrow(b) for v in versions for b in v.iter_batches(verify="full")]
        if not frames:
            raise ValueError("the benchmark versions hold no rows")
        df = pl.concat(frames)
        self.ids = df["id"]
        pub = df.filter(pl.col("source") == "pubmedqa")
        self.pmid = dict(zip(pub.select(_pmid())["pmid"].to_list(), pub["id"].to_list()))
        self.pmid.pop(None, None)
        self.title: dict[str, str] = {}
        for q, i in zip(pub["question"].to_list(), pub["id"].to_list()):
            self.title.setdefault(normalize_key(q), i)
        text = df.select(t=decontam_text_expr())["t"]
        toks = text.str.extract_all(TOKEN_PATTERN)
        ns = np.where((df["lang"] == "zh").to_numpy(), config.ngram_zh, config.ngram_en)
        grams, goffs = shingle_sets(toks, ns, seed=7)
        owner = np.repeat(np.arange(df.height), np.diff(goffs))
        order = np.lexsort((owner, grams))  # by gram, then the first benchmark row
        grams, owner = grams[order], owner[order]
        first = np.r_[True, grams[1:] != grams[:-1]]
        self.grams, self.gram_owner = grams[first], owner[first]
        long = (toks.list.len().fill_null(0) >= config.min_tokens).to_numpy()
        self.long_rows = np.flatnonzero(long)
        self.values, self.offsets = shingle_sets(toks.filter(pl.Series(long)), 3)
        sig = signatures(self.values, self.offsets, config.num_perm, config.seed)
        self.bands = band_hashes(sig, config.bands, config.rows)
        self.rows = df.height

    def matches(self, df: pl.DataFrame) -> list[tuple[str, str, float | None] | None]:
        """For each training row: (benchmark id, method, similarity) or None."""
        cfg = self.config
        out: list[tuple[str, str, float | None] | None] = [None] * df.height
        ids = self.ids
        # PubMedQA: PMID and title
        pmids = df.select(_pmid())["pmid"].to_list()
        sources = df["source"].to_list()
        for i, (src, pmid) in enumerate(zip(sources, pmids)):
            if src != "pubmedqa":
                continue
            if pmid is not None and pmid in self.pmid:
                out[i] = (self.pmid[pmid], "pmid", None)
            else:
                title = normalize_key(df["question"][i])
                if title in self.title:
                    out[i] = (self.title[title], "title", None)
        text = df.select(t=decontam_text_expr())["t"]
        toks = text.str.extract_all(TOKEN_PATTERN)
        # n-gram overlap: each training n-gram looked up among the benchmark's
        ns = np.where((df["lang"] == "zh").to_numpy(), cfg.ngram_zh, cfg.ngram_en)
        grams, goffs = shingle_sets(toks, ns, seed=7)
        if len(grams) and len(self.grams):
            pos = np.minimum(np.searchsorted(self.grams, grams), len(self.grams) - 1)
            hit = self.grams[pos] == grams
            row = np.repeat(np.arange(df.height), np.diff(goffs))
            best = np.full(df.height, np.iinfo(np.int64).max)
            np.minimum.at(best, row[hit], self.gram_owner[pos[hit]])
            for i in np.flatnonzero(best < np.iinfo(np.int64).max):
                if out[i] is None:
                    out[i] = (ids[int(best[i])], "ngram", None)
        # whole-item MinHash against the benchmark, verified
        long = (toks.list.len().fill_null(0) >= cfg.min_tokens).to_numpy()
        long_rows = np.flatnonzero(long)
        if len(long_rows) and len(self.long_rows):
            values, offsets = shingle_sets(toks.filter(pl.Series(long)), 3)
            bands = band_hashes(signatures(values, offsets, cfg.num_perm, cfg.seed),
                                cfg.bands, cfg.rows)
            mine = pl.DataFrame({"t": np.repeat(np.arange(len(long_rows)), cfg.bands),
                                 "band": np.tile(np.arange(cfg.bands), len(long_rows)),
                                 "h": bands.ravel()})
            theirs = pl.DataFrame({"b": np.repeat(np.arange(len(self.long_rows)), cfg.bands),
                                   "band": np.tile(np.arange(cfg.bands), len(self.long_rows)),
                                   "h": self.bands.ravel()})
            cands = mine.join(theirs, on=["band", "h"]).select("t", "b").unique().sort("t", "b")
            t, b = cands["t"].to_numpy(), cands["b"].to_numpy()
            sims = jaccard_pairs(values, offsets, t, self.values, self.offsets, b)
            for tk, bk, sim in zip(t.tolist(), b.tolist(), sims.tolist()):
                i = int(long_rows[tk])
                if out[i] is None and sim >= cfg.threshold:
                    out[i] = (ids[int(self.long_rows[bk])], "minhash", sim)
        return out


class DecontamStep(Step):
    """Rows overlapping the benchmark versions removed, each with what it matched."""

    name = "decontam"
    needs = ("id", "source", "question", "options", "answer", "meta", "lang")
    parallel = True

    def __init__(self, benchmarks: list, config: DecontamConfig | None = None):
        self.config = config or DecontamConfig()
        self.refs = [b.ref for b in benchmarks]
        self.bench = Benchmark(benchmarks, self.config)
        self.by_method: dict[str, int] = {}
        self.rows_in = 0
        self.listed: list[dict[str, Any]] = []

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        df = pl.from_arrow(batch)
        found = self.bench.matches(df)
        self.rows_in += batch.num_rows
        bad = [i for i, m in enumerate(found) if m is not None]
        if not bad:
            return batch
        rows = batch.take(pa.array(bad)).to_pylist()
        details = []
        for i, row in zip(bad, rows):
            bench_id, method, sim = found[i]
            self.by_method[method] = self.by_method.get(method, 0) + 1
            details.append({"matched": bench_id, "method": method, "similarity": sim})
            if len(self.listed) < REPORT_EXAMPLES:
                self.listed.append({"id": row["id"], "reason": "contaminated", **details[-1]})
        books.drop("contaminated", rows=rows, details=details)
        keep = np.ones(batch.num_rows, bool)
        keep[bad] = False
        return batch.filter(pa.array(keep))

    def take_state(self) -> tuple[int, dict[str, int], list[dict[str, Any]]]:
        state = (self.rows_in, self.by_method, self.listed)
        self.rows_in, self.by_method, self.listed = 0, {}, []
        return state

    def merge_state(self, state: tuple[int, dict[str, int], list[dict[str, Any]]]) -> None:
        rows_in, by_method, listed = state
        self.rows_in += rows_in
        for method, n in by_method.items():
            self.by_method[method] = self.by_method.get(method, 0) + n
        self.listed = (self.listed + listed)[:REPORT_EXAMPLES]

    def report_config(self) -> dict[str, Any]:
        return {**asdict(self.config), "against": self.refs}

    def report(self) -> dict[str, Any]:
        contaminated = sum(self.by_method.values())
        return {"summary": {"rows_in": self.rows_in, "rows_out": self.rows_in - contaminated,
                            "contaminated": contaminated, "by_method": self.by_method,
                            "benchmark_rows": self.bench.rows, "against": self.refs,
                            "config": asdict(self.config)},
                "dropped": self.listed, "dropped_listed": len(self.listed)}


# ---- lists of rows (tests, benchmarks, small data) ------------------------------------------------------
def _run_list(step: Step, rows: list[dict[str, Any]]) -> tuple[list, list, dict]:
    """Run one step over rows in memory: (kept rows, every dropped record, summary)."""
    import tempfile

    from meddata.schema import CANONICAL
    from meddata.steps import Ledger, run

    batches = pa.Table.from_pylist(rows, schema=CANONICAL).to_batches(
        max_chunksize=LIST_BATCH_ROWS)
    dropped: list[dict[str, Any]] = []

    def sink(rejects: list[dict[str, Any]]) -> None:
        dropped.extend({"id": json.loads(r["raw"])["id"], "reason": r["reason"],
                        **json.loads(r["detail"])} for r in rejects)

    with tempfile.TemporaryDirectory() as tmp:
        out = list(run(lambda replay: iter(batches), [step], Ledger(sink), Path(tmp)))
    kept_ids = {r for b in out for r in b.column("id").to_pylist()}
    order = {r["id"]: i for i, r in enumerate(rows)}
    dropped.sort(key=lambda d: order[d["id"]])
    return [r for r in rows if r["id"] in kept_ids], dropped, step.report()["summary"]


def dedup(rows: list[dict[str, Any]], config: DedupConfig | None = None
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, dropped records, summary) for rows in memory (ids must be unique)."""
    return _run_list(DedupStep(config), rows)


def decontaminate(rows: list[dict[str, Any]], bench: list[dict[str, Any]],
                  config: DecontamConfig | None = None):
    """(kept rows, dropped records, summary) for rows and benchmark rows in memory."""
    from meddata.schema import CANONICAL

    class _Rows:  # a benchmark "version" from rows
        ref = "rows"

        def iter_batches(self, verify: str = "full"):
            yield from pa.Table.from_pylist(bench, schema=CANONICAL).to_batches()

    return _run_list(DecontamStep([_Rows()], config), rows)


# ---- publishing ---------------------------------------------------------------------------------------
def _publish_canonical(store, version, name: str, step: Step, parents: list[dict[str, Any]],
                       progress: bool, engine=None):
    from meddata import runner
    from meddata.schema import CANONICAL

    if version.kind != "canonical":
        raise ValueError(f"{version.ref}: {step.name} works on canonical versions")
    read = runner.with_progress(runner.read_versions([version]), step.name, version.rows,
                                progress)
    config = step.report_config()
    return runner.publish(store, "canonical", name, CANONICAL, read, [step],
                          manifest={"inputs": [{"ref": p["ref"]} for p in parents],
                                    "recipe": {step.name: config}, "parents": parents},
                          engine=engine or runner.Engine.choose())


def run_dedup(store, ref: str, name: str | None = None, config: DedupConfig | None = None,
              against: list[str] = (), progress: bool = False, engine=None):
    """Deduplicate canonical version `ref` (and drop its rows that duplicate rows of the
    versions `against`) and publish canonical/<name> (default <name>-dedup), on `engine`
    (a meddata.runner.Engine; default local, or MEDDATA_ENGINE)."""
    version = store.resolve(ref)
    earlier = [store.resolve(a) for a in against]
    for v in earlier:
        if v.kind != "canonical":
            raise ValueError(f"{v.ref}: dedup --against takes canonical versions")
    step = DedupStep(config, against=earlier)
    return _publish_canonical(store, version, name or f"{version.name}-dedup", step,
                              [version.as_parent(),
                               *(v.as_parent(role="dedup_against") for v in earlier)], progress,
                              engine)


def run_decontam(store, ref: str, against: list[str], name: str | None = None,
                 config: DecontamConfig | None = None, progress: bool = False, engine=None):
    """Drop rows of canonical `ref` that overlap the benchmark versions `against`, on
    `engine` (as for run_dedup)."""
    version = store.resolve(ref)
    benches = [store.resolve(a) for a in against]
    for v in benches:
        if v.kind != "canonical":
            raise ValueError(f"{v.ref}: decontam works on canonical versions")
    step = DecontamStep(benches, config)
    return _publish_canonical(store, version, name or f"{version.name}-decontam", step,
                              [version.as_parent(),
                               *(b.as_parent(role="benchmark") for b in benches)], progress,
                              engine)
