"""MinHash kernels shared by dedup and decontamination, vectorized in numpy and polars
(docs/dedup.md has the figures behind every default).

A row's comparison text: the question, then for MCQ the option texts, each normalized and
sorted (so option order does not matter), for yes/no, instructions and documents the
context, normalized (meddata.text.normalize_key_expr: NFKC, lower case, punctuation and
symbols removed, whitespace collapsed, digits kept); its tokens come from the one
mixed-script tokenizer (Latin/digit runs are words, each CJK character is a token).
Shingles of `ngram` tokens are hashed to 64 bits and kept as one sorted array plus
offsets; a MinHash signature of `num_perm` values is kept only as `bands` band hashes of
`rows` values each. Candidate pairs come from grouping equal band hashes (a sort per band,
pairs inside each run of equal values), the shape NeMo Curator and text-dedup on Spark
take; each is verified with the exact Jaccard of the two shingle sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from meddata.steps.registry import Settings, SettingsError
from meddata.text import TOKEN_PATTERN, normalize_key_expr


class MinHashSettings(Settings):
    """The checks every MinHash step's settings share (they declare `threshold`,
    `num_perm`, `bands` and `rows`)."""

    def check(self) -> None:
        if self.bands * self.rows > self.num_perm:
            raise SettingsError(f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm "
                                f"{self.num_perm}")
        if not 0 < self.threshold <= 1:
            raise SettingsError(f"threshold must be in (0, 1], got {self.threshold}")


RUN_PAIRS_CAP = 64      # a band run larger than this pairs each member with its neighbours
VERIFY_CHUNK = 200_000  # candidate pairs verified at a time
_U64 = np.uint64
_MIX1, _MIX2, _PRIME = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB), \
    _U64(0x100000001B3)


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


def fingerprint(df: pl.DataFrame, config) -> Fingerprint:
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


def compact_fingerprints(df: pl.DataFrame, config) -> pa.Table:
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

