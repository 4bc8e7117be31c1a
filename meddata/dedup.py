"""Exact and near-duplicate removal, and decontamination against benchmarks (DESIGN.md §9).

Both take canonical rows (dicts) and return the rows kept plus one record per dropped row
saying why (cluster, survivor, similarity; or the benchmark row matched and how).

Text of a row for comparison (`item_text`): the question, then for MCQ the option texts
sorted (so option order does not matter), for yes/no and instructions the context, for
documents the body. Keys use meddata.text.normalize_key (NFKC, full-width to half-width,
case-fold, punctuation and symbols removed, whitespace collapsed, digits kept) and the
mixed-script tokenizer (Latin/digit runs are words, each CJK character is a token).

Near duplicates: shingles of 3 tokens, so English rows get 3-word shingles and Chinese rows
3-character shingles, from one tokenizer. Texts under `min_tokens` tokens are only
deduplicated exactly. Signatures are computed in bulk with numpy (a 64-bit hash per
shingle from polars, `num_perm` affine permutations, a min per row: no Python loop over
tokens), wrapped as datasketch LeanMinHash objects and indexed with datasketch's
MinHashLSH with bands x rows set explicitly (25 x 5 by default: a pair at Jaccard 0.7
becomes a candidate with probability 0.99, at 0.8 with 0.9999), five bands at a time to
bound the index's memory. Every candidate pair is verified with the exact Jaccard of the
two shingle sets, and for MCQ and yes/no rows the normalized gold answers must agree too. Clusters are connected components of the verified pairs; each
keeps one survivor chosen by `survivor_key`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from meddata.text import normalize_key, tokens

SHINGLE_BLOCK_ROWS = 20_000   # rows tokenized and shingled at a time
LSH_BANDS_PER_PASS = 5        # LSH bands indexed at a time


@dataclass
class DedupConfig:
    threshold: float = 0.7          # exact Jaccard of 3-token shingles to call rows duplicates
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


# ---- item text ------------------------------------------------------------------------------
def item_text(row: dict[str, Any]) -> str:
    parts = [row.get("question") or ""]
    if row.get("task") == "mcq":
        parts += sorted(normalize_key(o["text"]) for o in row.get("options") or [])
    elif row.get("task") in ("yes_no", "instruction", "document"):
        parts.append(row.get("context") or "")
    return "\n".join(p for p in parts if p)


def answer_key(row: dict[str, Any]) -> str | None:
    """The normalized gold answer for MCQ and yes/no rows (None elsewhere: not compared)."""
    if row.get("task") in ("mcq", "yes_no"):
        return normalize_key(row.get("answer")) or ""
    return None


def survivor_key(row: dict[str, Any], priority: list[str]) -> tuple:
    """Lower sorts first: source priority, has an answer, longest rationale, longest text,
    lowest content hash."""
    rank = priority.index(row["source"]) if row["source"] in priority else len(priority)
    return (rank, 0 if row.get("answer") or row.get("response") else 1,
            -len(row.get("rationale") or ""), -len(row.get("question") or "") - len(
                row.get("context") or "") - len(row.get("response") or ""), row["raw_sha1"],
            row["id"])


# ---- shingles and signatures ------------------------------------------------------------------
def shingle_hashes(token_lists: list[list[str]], n: int | list[int], seed: int = 0
                   ) -> pl.DataFrame:
    """One row per (row, shingle hash), unique per row: the hash of each n-token shingle
    (n may differ per row). A row with fewer than n tokens gets one shingle of all of them."""
    ns = [n] * len(token_lists) if isinstance(n, int) else n
    lengths = [len(t) for t in token_lists]
    df = pl.DataFrame({"row": np.repeat(np.arange(len(token_lists)), lengths),
                       "tok": [t for ts in token_lists for t in ts]},
                      schema={"row": pl.Int64, "tok": pl.String})
    if df.height == 0:
        return pl.DataFrame(schema={"row": pl.Int64, "h": pl.UInt64})
    df = df.with_columns(pos=pl.int_range(pl.len()).over("row"),
                         n=pl.Series(np.repeat(np.array(ns, dtype=np.int64), lengths)),
                         len=pl.Series(np.repeat(np.array(lengths, dtype=np.int64), lengths)))
    max_n = max(ns)
    shifted = [pl.col("tok")] + [pl.col("tok").shift(-k) for k in range(1, max_n)]
    # shingle of min(n, len) tokens starting at pos, for pos <= len - min(n, len)
    width = pl.min_horizontal("n", "len")
    pieces = [pl.when(pl.lit(k) < width).then(shifted[k]) for k in range(max_n)]
    shingles = df.with_columns(s=pl.concat_str(pieces, separator=" ", ignore_nulls=True)
                               ).filter(pl.col("pos") <= pl.col("len") - width)
    return shingles.select("row", h=pl.col("s").hash(seed=seed)).unique(maintain_order=True)


def signatures(hashes: pl.DataFrame, n_rows: int, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures (n_rows x num_perm, uint32) from per-row shingle hashes, in numpy
    blocks: h -> top 32 bits of (a * h + b) mod 2^64 with odd a, then the min per row.
    Rows with no shingles get all-max signatures."""
    rng = np.random.RandomState(seed)
    a = (rng.randint(0, 1 << 62, num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
    b = rng.randint(0, 1 << 62, num_perm, dtype=np.uint64)
    sig = np.full((n_rows, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if hashes.height == 0:
        return sig
    hashes = hashes.sort("row")
    rows = hashes["row"].to_numpy()
    hv = hashes["h"].to_numpy()
    block = max(1, 2_000_000 // num_perm)  # shingles per block (~16 MB of uint64)
    start = 0
    while start < len(hv):
        end = min(len(hv), start + block)
        # extend the block to a row boundary so each row is reduced in one piece
        while end < len(hv) and rows[end] == rows[end - 1]:
            end += 1
        with np.errstate(over="ignore"):
            phv = ((hv[start:end, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(
                np.uint32)
        r = rows[start:end]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        sig[r[starts]] = np.minimum(sig[r[starts]], np.minimum.reduceat(phv, starts, axis=0))
        start = end
    return sig


def lsh_pairs(sig: np.ndarray, candidates_of: np.ndarray, index_of: np.ndarray,
              num_perm: int, bands: int, rows: int, bands_per_pass: int | None = None
              ) -> np.ndarray:
    """Candidate pairs (query row, indexed row), an (k, 2) int64 array sorted and unique, from
    datasketch's MinHashLSH. The bands are indexed a few at a time (an LSH over those bands'
    signature columns, then dropped): a pair is a candidate when any band collides, so the
    union over passes is exactly the one-index result, with a fraction of the index in
    memory at once (datasketch keeps it in Python dicts, about 1.5 GB per 200,000 rows for
    25 bands)."""
    from datasketch import LeanMinHash, MinHashLSH

    bands_per_pass = bands_per_pass or LSH_BANDS_PER_PASS
    n = np.int64(max(len(sig), 1))
    found = np.empty(0, dtype=np.int64)
    # passes of near-equal size, each of at least 2 bands (datasketch's minimum)
    passes = max(1, min(-(-bands // bands_per_pass), bands // 2))
    sizes = [bands // passes + (k < bands % passes) for k in range(passes)]
    for b0, b1 in zip(np.cumsum([0, *sizes[:-1]]).tolist(), np.cumsum(sizes).tolist()):
        cols = np.ascontiguousarray(sig[:, b0 * rows:b1 * rows])
        lsh = MinHashLSH(num_perm=(b1 - b0) * rows, params=(b1 - b0, rows))
        with lsh.insertion_session() as session:
            for i in index_of:
                session.insert(int(i), LeanMinHash(seed=1, hashvalues=cols[i], scheme="affine32"),
                               check_duplication=False)
        keys = [int(i) * int(n) + j for i in candidates_of
                for j in lsh.query(LeanMinHash(seed=1, hashvalues=cols[i], scheme="affine32"))]
        del lsh
        found = np.union1d(found, np.asarray(keys, dtype=np.int64))
    return np.stack([found // n, found % n], axis=1)


class ShingleSets:
    """Each row's sorted, unique shingle hashes in one array plus offsets (8 bytes a
    shingle; a numpy array per row would cost ~100 bytes more each)."""

    def __init__(self, hashes: pl.DataFrame, n_rows: int):
        ordered = hashes.sort("row", "h")
        self.values = ordered["h"].to_numpy()
        self.offsets = np.searchsorted(ordered["row"].to_numpy(), np.arange(n_rows + 1))

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]


def blocked_shingles(keys: list[str], n: int, min_tokens: int,
                     block_rows: int | None = None) -> tuple[np.ndarray, pl.DataFrame]:
    """(indices of the rows with at least `min_tokens` tokens, their shingle hashes with `row`
    numbering those rows 0..), tokenizing and shingling `block_rows` rows at a time so the
    token lists and shingle strings of only one block are alive at once."""
    block_rows = block_rows or SHINGLE_BLOCK_ROWS
    long_rows: list[int] = []
    parts = []
    for start in range(0, len(keys), block_rows):
        toks = [tokens(k) for k in keys[start:start + block_rows]]
        local = [i for i, t in enumerate(toks) if len(t) >= min_tokens]
        if local:
            part = shingle_hashes([toks[i] for i in local], n)
            parts.append(part.with_columns(pl.col("row") + len(long_rows)))
            long_rows.extend(start + i for i in local)
    hashes = (pl.concat(parts) if parts
              else pl.DataFrame(schema={"row": pl.Int64, "h": pl.UInt64}))
    return np.array(long_rows, dtype=np.int64), hashes


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - inter
    return inter / union if union else 1.0


class _Components:
    """Connected components over row indices (union-find with path halving)."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


# ---- dedup ----------------------------------------------------------------------------------------
def dedup(rows: list[dict[str, Any]], config: DedupConfig | None = None
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, dropped records, summary). Dropped records: id, reason (exact_duplicate |
    near_duplicate), cluster, kept (survivor id), similarity."""
    config = config or DedupConfig()
    config.check()
    n = len(rows)
    texts = [item_text(r) for r in rows]
    keys = [normalize_key(t) for t in texts]
    answers = [answer_key(r) for r in rows]
    comps = _Components(n)
    best_sim: dict[int, float] = {}

    first_by_key: dict[tuple[str, str | None], int] = {}
    for i, (k, a) in enumerate(zip(keys, answers)):
        j = first_by_key.setdefault((k, a), i)
        if j != i:
            comps.union(i, j)

    del texts
    long_rows, hashes = blocked_shingles(keys, config.ngram, config.min_tokens)
    near_pairs = 0
    if len(long_rows) > 1:
        sig = signatures(hashes, len(long_rows), config.num_perm, config.seed)
        sets = ShingleSets(hashes, len(long_rows))
        del hashes
        local = np.arange(len(long_rows))
        pairs = lsh_pairs(sig, local, local, config.num_perm, config.bands, config.rows)
        del sig
        for qi, ji in pairs.tolist():
            if qi >= ji:
                continue
            i, j = int(long_rows[qi]), int(long_rows[ji])
            if answers[i] != answers[j]:
                continue  # "indicated" vs "contraindicated": different questions
            sim = exact_jaccard(sets[qi], sets[ji])
            if sim >= config.threshold:
                comps.union(i, j)
                for k in (i, j):
                    best_sim[k] = max(best_sim.get(k, 0.0), sim)
                near_pairs += 1

    clusters: dict[int, list[int]] = {}
    for i in range(n):
        clusters.setdefault(comps.find(i), []).append(i)
    kept, dropped = [], []
    drop_index: dict[int, dict[str, Any]] = {}
    for members in clusters.values():
        if len(members) == 1:
            continue
        survivor = min(members, key=lambda i: survivor_key(rows[i], config.source_priority))
        cluster_id = rows[survivor]["id"]
        for i in members:
            if i == survivor:
                continue
            exact = keys[i] == keys[survivor] and answers[i] == answers[survivor]
            sim = 1.0 if exact else best_sim.get(i)
            drop_index[i] = {"id": rows[i]["id"], "reason": "exact_duplicate" if exact
                             else "near_duplicate", "cluster": cluster_id,
                             "kept": cluster_id, "similarity": sim,
                             "cluster_size": len(members)}
    for i, row in enumerate(rows):
        if i in drop_index:
            dropped.append(drop_index[i])
        else:
            kept.append(row)
    summary = {"rows_in": n, "rows_out": len(kept),
               "exact_duplicate": sum(d["reason"] == "exact_duplicate" for d in dropped),
               "near_duplicate": sum(d["reason"] == "near_duplicate" for d in dropped),
               "clusters": sum(1 for m in clusters.values() if len(m) > 1),
               "verified_near_pairs": near_pairs, "config": asdict(config)}
    return kept, dropped, summary


# ---- decontamination --------------------------------------------------------------------------------
def decontam_text(row: dict[str, Any]) -> str:
    """Question, options and answer: what a benchmark item shows."""
    parts = [row.get("question") or ""]
    parts += [o["text"] for o in row.get("options") or []]
    parts.append(row.get("answer") or "")
    return normalize_key("\n".join(p for p in parts if p))


def _pmid(row: dict[str, Any]) -> str | None:
    if row.get("source") != "pubmedqa":
        return None
    return json.loads(row.get("meta") or "{}").get("pmid")


def decontaminate(rows: list[dict[str, Any]], bench: list[dict[str, Any]],
                  config: DecontamConfig | None = None
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(kept rows, dropped records, summary). A training row is dropped when it shares an
    n-gram with a benchmark item (English word `ngram_en`-grams, Chinese character
    `ngram_zh`-grams; items shorter than n are compared whole), when its whole-item MinHash
    similarity (verified exact Jaccard) reaches `threshold`, or, for PubMedQA, when its PMID
    or normalized question (the article title) is a benchmark's. Each dropped record names
    the benchmark row matched and the method."""
    config = config or DecontamConfig()
    n_train = len(rows)
    all_rows = rows + bench
    texts = [decontam_text(r) for r in all_rows]
    matched: dict[int, tuple[str, str, float | None]] = {}

    def ngrams(start: int, stop: int) -> pl.DataFrame:  # (row, h) for all_rows[start:stop]
        ns = [config.ngram_zh if r.get("lang") == "zh" else config.ngram_en
              for r in all_rows[start:stop]]
        grams = shingle_hashes([tokens(t) for t in texts[start:stop]], ns, seed=7)
        return grams.with_columns(pl.col("row") + start)

    # PubMedQA: PMID and title
    bench_pmid = {p: b["id"] for b in bench if (p := _pmid(b))}
    bench_title = {normalize_key(b["question"]): b["id"] for b in bench
                   if b.get("source") == "pubmedqa"}
    for i, r in enumerate(rows):
        if (p := _pmid(r)) and p in bench_pmid:
            matched[i] = (bench_pmid[p], "pmid", None)
        elif r.get("source") == "pubmedqa" and normalize_key(r["question"]) in bench_title:
            matched[i] = (bench_title[normalize_key(r["question"])], "title", None)

    # n-gram overlap, joined in polars: the benchmark's n-grams, then the training rows'
    # SHINGLE_BLOCK_ROWS at a time
    bench_g = ngrams(n_train, len(all_rows)).group_by("h").agg(
        pl.col("row").min().alias("bench_row"))
    for start in range(0, n_train, SHINGLE_BLOCK_ROWS):
        hits = ngrams(start, min(n_train, start + SHINGLE_BLOCK_ROWS)).join(
            bench_g, on="h").group_by("row").agg(pl.col("bench_row").min()).sort("row")
        for i, b in zip(hits["row"].to_list(), hits["bench_row"].to_list()):
            matched.setdefault(i, (all_rows[b]["id"], "ngram", None))

    # whole-item MinHash against the benchmark, verified
    long_rows, hashes = blocked_shingles(texts, 3, config.min_tokens)
    if len(long_rows):
        sig = signatures(hashes, len(long_rows), config.num_perm, config.seed)
        sets = ShingleSets(hashes, len(long_rows))
        del hashes
        local = np.arange(len(long_rows))
        is_train = long_rows < n_train
        for qi, bi in lsh_pairs(sig, local[is_train], local[~is_train], config.num_perm,
                                config.bands, config.rows).tolist():
            i = int(long_rows[qi])
            if i in matched:
                continue
            sim = exact_jaccard(sets[qi], sets[bi])
            if sim >= config.threshold:
                matched[i] = (all_rows[int(long_rows[bi])]["id"], "minhash", sim)

    kept, dropped = [], []
    for i, row in enumerate(rows):
        if i in matched:
            bench_id, method, sim = matched[i]
            dropped.append({"id": row["id"], "reason": "contaminated", "matched": bench_id,
                            "method": method, "similarity": sim})
        else:
            kept.append(row)
    by_method: dict[str, int] = {}
    for d in dropped:
        by_method[d["method"]] = by_method.get(d["method"], 0) + 1
    summary = {"rows_in": n_train, "rows_out": len(kept), "contaminated": len(dropped),
               "by_method": by_method, "benchmark_rows": len(bench), "config": asdict(config)}
    return kept, dropped, summary


# ---- publishing -------------------------------------------------------------------------------------
REPORT_EXAMPLES = 1000  # dropped records listed in the manifest; all are in rejects.parquet


def _publish(store, parent, name: str, kept: list[dict[str, Any]],
             dropped: list[dict[str, Any]], summary: dict[str, Any], stage: str,
             parents: list, rows: list[dict[str, Any]]):
    import pyarrow as pa

    from meddata.schema import CANONICAL

    by_id = {r["id"]: r for r in rows}
    rejects = [{"stage": stage, "source": by_id[d["id"]]["source"], "file": parent.ref,
                "position": None, "raw": json.dumps(by_id[d["id"]], ensure_ascii=False,
                                                    default=str),
                "reason": d["reason"], "detail": json.dumps(
                    {k: v for k, v in d.items() if k not in ("id", "reason")})}
               for d in dropped]
    counts: dict[str, int] = {}
    for d in dropped:
        counts[d["reason"]] = counts.get(d["reason"], 0) + 1
    report = {"summary": summary, "dropped": dropped[:REPORT_EXAMPLES],
              "dropped_listed": min(len(dropped), REPORT_EXAMPLES)}
    with store.publisher("canonical", name, CANONICAL, parents=parents,
                         inputs=[{"ref": p["ref"]} for p in parents],
                         recipe={stage: summary["config"]}, **{stage: report}) as pub:
        pub.write(pa.Table.from_pylist(kept, schema=CANONICAL))
        pub.reject(rejects)
        pub.add_stage(stage, len(rows), len(kept), counts)
    return pub.version


def run_dedup(store, ref: str, name: str | None = None, config: DedupConfig | None = None):
    """Deduplicate canonical version `ref` and publish canonical/<name> (default
    <name>-dedup)."""
    version = store.resolve(ref)
    if version.kind != "canonical":
        raise ValueError(f"{version.ref}: dedup works on canonical versions")
    rows = version.to_table().to_pylist()
    kept, dropped, summary = dedup(rows, config)
    return _publish(store, version, name or f"{version.name}-dedup", kept, dropped, summary,
                    "dedup", [version.as_parent()], rows)


def run_decontam(store, ref: str, against: list[str], name: str | None = None,
                 config: DecontamConfig | None = None):
    """Drop rows of canonical `ref` that overlap the benchmark versions `against`."""
    version = store.resolve(ref)
    benches = [store.resolve(a) for a in against]
    for v in [version, *benches]:
        if v.kind != "canonical":
            raise ValueError(f"{v.ref}: decontam works on canonical versions")
    rows = version.to_table().to_pylist()
    bench = [r for b in benches for r in b.to_table().to_pylist()]
    kept, dropped, summary = decontaminate(rows, bench, config)
    summary["against"] = [b.ref for b in benches]
    return _publish(store, version, name or f"{version.name}-decontam", kept, dropped,
                    summary, "decontam",
                    [version.as_parent(), *(b.as_parent(role="benchmark") for b in benches)],
                    rows)
