"""Decontamination against benchmarks over canonical batches (recipe `decontam`,
`meddata decontam`).

A training row is dropped when it shares an English word `ngram_en`-gram or a Chinese
character `ngram_zh`-gram with a benchmark item (question, options and answer), when its
whole-item MinHash similarity to one (verified exact Jaccard) reaches `threshold`, or, for
PubMedQA, when its PMID or title (its question) is a benchmark's. The benchmark side is
small and held in memory, built once per worker (`setup`); training rows stream batch by
batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from meddata.minhash import MinHashSettings, band_hashes, jaccard_pairs, shingle_sets, signatures
from meddata.steps.base import Books, Step
from meddata.steps.registry import SettingsError, setting
from meddata.text import TOKEN_PATTERN, normalize_key, normalize_key_expr

REPORT_EXAMPLES = 1000  # dropped records listed in the manifest; all are in rejects.parquet


@dataclass
class DecontamSettings(MinHashSettings):
    against: list[str] = setting([], "the benchmark canonical versions (required)")
    ngram_en: int = setting(8, "English word n-grams over question, options and answer")
    ngram_zh: int = setting(13, "Chinese character n-grams")
    threshold: float = setting(0.8, "whole-item MinHash similarity, verified with exact "
                                    "Jaccard, that counts as a match")
    num_perm: int = setting(128, "MinHash permutations")
    bands: int = setting(20, "LSH bands")
    rows: int = setting(6, "rows per LSH band")
    min_tokens: int = setting(8, "shorter items are matched by n-grams only")
    seed: int = setting(1, "MinHash seed")


DecontamConfig = DecontamSettings  # the name the library API has used


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
    settings_class = DecontamSettings
    needs = ("id", "source", "question", "options", "answer", "meta", "lang")
    parallel = True
    worker_state = ("bench",)  # the benchmarks in memory: built in each worker

    def __init__(self, benchmarks: list, config: DecontamConfig | None = None):
        self.config = config or DecontamConfig()
        self.benchmarks = list(benchmarks)
        self.refs = [b.ref for b in benchmarks]
        self.benchmark_rows = sum(b.rows for b in benchmarks)
        self.by_method: dict[str, int] = {}
        self.rows_in = 0
        self.listed: list[dict[str, Any]] = []

    @classmethod
    def from_settings(cls, settings: DecontamSettings, context) -> DecontamStep:
        if not settings.against:
            raise SettingsError("decontam: give the benchmark versions in `against`, for "
                                "example [canonical/medqa-test@latest]")
        benches = [context.store.resolve(ref) for ref in settings.against]
        for v in benches:
            if v.kind != "canonical":
                raise ValueError(f"{v.ref}: decontam works on canonical versions")
        return cls(benches, settings)

    def parents(self) -> list[dict[str, Any]]:
        """The versions this step read, for the manifest's parents."""
        return [b.as_parent(role="benchmark") for b in self.benchmarks]

    def setup(self) -> None:
        self.bench = Benchmark(self.benchmarks, self.config)

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
                            "benchmark_rows": self.benchmark_rows, "against": self.refs,
                            "config": asdict(self.config)},
                "dropped": self.listed, "dropped_listed": len(self.listed)}



def decontaminate(rows: list[dict[str, Any]], bench: list[dict[str, Any]],
                  config: DecontamConfig | None = None, batch_rows: int = 8192):
    """(kept rows, dropped records, summary) for rows and benchmark rows in memory, in
    batches of `batch_rows`."""
    from meddata.engines.local import run_list
    from meddata.schema import CANONICAL

    class _Rows:  # a benchmark "version" from rows
        ref = "rows"

        def __init__(self) -> None:
            self.rows = len(bench)

        def iter_batches(self, verify: str = "full"):
            yield from pa.Table.from_pylist(bench, schema=CANONICAL).to_batches()

    return run_list(DecontamStep([_Rows()], config), rows, batch_rows)


STEP = DecontamStep
