"""Run a kind's suite on a version (or on rows as a build writes them) and report.

A `Checker` takes batches: it derives the checkable columns of each batch in polars and
runs Great Expectations on them a chunk at a time (`CHUNK_ROWS` derived rows), merging the
results, so memory stays flat however many rows there are. A result is a plain dict:
`success`, `mode` ("full" or "sample"), rows checked and total, and one entry per check
with its name, the expectation behind it, success, the number of failing rows and up to
five example ids. Checks on the manifest (row conservation of every stage, shard hashes
and the id, row counts) come after the Great Expectations results, in the same shape.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from meddata.steps import SeenKeys, first_seen, key_hashes, seeded_array
from meddata.store import ShardIntegrityError, Version

from .suites import Bounds, Rule, rules

EXAMPLES = 5
CHUNK_ROWS = 50_000  # derived rows per Great Expectations run (its pandas frame is the peak)
TOKENS = "_tokens"


class _Suite:
    """A Great Expectations suite of rules, set up once (an ephemeral context, a pandas
    data source, the expectations) and run on one frame of derived columns after another."""

    def __init__(self, suite_rules: list[Rule], name: str):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.rules = {r.name: r for r in suite_rules}
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("meddata").add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe("all rows")
        suite = context.suites.add(gx.ExpectationSuite(name=f"meddata.{name}"))
        for rule in suite_rules:
            cls = getattr(gx.expectations, rule.expectation)
            suite.add_expectation(cls(**rule.kwargs, meta={"meddata_check": rule.name},
                                      description=rule.description or rule.name))
        self.definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name} validation", data=batch, suite=suite))

    def run(self, frame) -> list[dict[str, Any]]:
        """Results on one pandas frame of derived columns."""
        result = self.definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": ["id"],
                           "partial_unexpected_count": 20})
        out = []
        for r in result.results:
            check = r.expectation_config.meta.get("meddata_check")
            res = r.result or {}
            examples = []
            for item in res.get("partial_unexpected_index_list") or []:
                if isinstance(item, dict) and item.get("id") not in examples:
                    examples.append(item.get("id"))
            failing = res.get("unexpected_count")
            if failing is None and not r.success:
                failing = len(frame) if self.rules[check].scope != "distinct" else 0
            out.append({"name": check, "expectation": r.expectation_config.type,
                        "description": self.rules[check].description,
                        "success": bool(r.success), "failing_rows": int(failing or 0),
                        "examples": [e for e in examples if e is not None][:EXAMPLES],
                        "observed": _plain(res.get("observed_value"))})
        return out


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def derive(lazy: pl.LazyFrame, suite_rules: list[Rule]) -> pl.DataFrame:
    columns: dict[str, pl.Expr] = {"id": pl.col("id")}
    for rule in suite_rules:
        columns.update(rule.derive)
    if any(r.name == "answer_present" for r in suite_rules):
        columns["answer"] = pl.col("answer")
    return lazy.select(**columns).collect()


def _import_in_background() -> None:
    """Import Great Expectations (about 4 s of Python) on a thread while the build's first
    batches are read and tokenized, instead of after the last row; the first suite waits on
    the import lock if it is not done."""
    import sys
    import threading

    if "great_expectations" not in sys.modules:
        threading.Thread(target=__import__, args=("great_expectations",), daemon=True,
                         name="meddata-import-gx").start()


class Checker:
    """The suite of `kind`, fed batch by batch; `result()` when every batch is in.

    `keep(batch)` may return a boolean mask of the rows to check (a sample); derived
    columns that need every row (unique ids, distinct values) still see them all."""

    def __init__(self, kind: str, bounds: Bounds | None = None,
                 contaminated: list[str] | None = None, tokens: bool = False,
                 keep=None):
        self.kind = kind
        self.bounds = bounds or Bounds()
        self.contaminated = contaminated
        self.want_tokens = tokens
        self.tokens = False  # decided by the first batch: does it carry token lengths?
        self.rules: list[Rule] | None = None
        self.keep = keep
        self.seen = SeenKeys()
        self.distinct: dict[str, set] = {}
        self.buffer: list = []  # pandas frames of derived columns
        self.buffered = 0
        self.suite: _Suite | None = None
        self.checks: dict[str, dict[str, Any]] = {}
        self.rows_total = self.rows_checked = 0

    def _start(self, names: list[str]) -> None:
        self.tokens = self.want_tokens and bool(self.bounds.max_tokens) and TOKENS in names
        self.bounds = dataclasses.replace(self.bounds, columns=frozenset(names))
        self.rules = rules(self.kind, self.bounds, self.contaminated, token_column=self.tokens)
        self.row_rules = [r for r in self.rules if r.scope != "distinct"]
        self.distinct_rules = [r for r in self.rules if r.scope == "distinct"]
        self.distinct = {r.kwargs["column"]: set() for r in self.distinct_rules}

    def feed(self, batch: pa.RecordBatch) -> None:
        if self.rules is None:
            _import_in_background()  # (not on a driver that only absorbs workers' checks)
            self._start(batch.schema.names)
        if not batch.num_rows:
            return
        df = pl.from_arrow(batch)
        derived = derive(df.lazy(), self.row_rules)
        if any(r.scope == "unique" for r in self.row_rules):
            derived = derived.with_columns(id_unique=pl.Series(
                first_seen(key_hashes(batch.column("id")), self.seen)))
        if self.tokens:
            derived = derived.with_columns(tokens=df[TOKENS])
        for column, values in self.distinct.items():
            values.update(df[column].unique().to_list())
        self.rows_total += batch.num_rows
        if self.keep is not None:
            derived = derived.filter(pl.Series(self.keep(batch)))
        self.rows_checked += derived.height
        if derived.height:
            # pandas now (Great Expectations runs on pandas): the derived columns then own
            # their memory, instead of keeping the batch they were sliced from alive
            self.buffer.append(derived.to_pandas())
            self.buffered += derived.height
        if self.buffered >= CHUNK_ROWS:
            self._flush()

    def spawn(self) -> Checker:
        """A new, empty checker with this one's settings: a worker checks the rows it
        writes with one, and hands its `partial()` back to this one (`absorb`)."""
        return Checker(self.kind, self.bounds, self.contaminated, self.want_tokens, self.keep)

    def __getstate__(self) -> dict[str, Any]:  # shipped to workers empty (`spawn`)
        return {"args": (self.kind, self.bounds, self.contaminated, self.want_tokens,
                         self.keep)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(*state["args"])

    def partial(self) -> dict[str, Any]:
        """What this checker found, for `absorb` on the driver's: the merged results of its
        suite runs, the distinct values, row counts and the hashes of the ids it saw (a
        unique-id check over all rows needs them; 8 bytes a row)."""
        self._flush()
        return {"names": sorted(self.bounds.columns) if self.rules is not None else None,
                "checks": list(self.checks.values()), "distinct": self.distinct,
                "rows_total": self.rows_total, "rows_checked": self.rows_checked,
                "ids": np.concatenate(self.seen.runs) if self.seen.runs else
                np.empty(0, np.uint64)}

    def absorb(self, partial: dict[str, Any], find_ids=None) -> None:
        """Add a worker's `partial()`, in input order. Ids another worker's rows had too
        fail the unique-id check here; `find_ids(hashes)` names them for its examples."""
        if partial["names"] is None:
            return
        if self.rules is None:
            self._start(partial["names"])
        self._merge([dict(c) for c in partial["checks"]])
        for column, values in partial["distinct"].items():
            self.distinct.setdefault(column, set()).update(values)
        self.rows_total += partial["rows_total"]
        self.rows_checked += partial["rows_checked"]
        ids = partial["ids"]
        again = ids[self.seen.contains(ids)]
        self.seen.add(ids)
        check = self.checks.get("unique_ids")
        if len(again) and check is not None:
            check["success"] = False
            check["failing_rows"] += len(again)
            found = find_ids(again[:EXAMPLES]) if find_ids is not None else []
            check["examples"] = list(dict.fromkeys(check["examples"] + found))[:EXAMPLES]

    def _merge(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            seen = self.checks.get(r["name"])
            if seen is None:
                self.checks[r["name"]] = r
                continue
            seen["success"] = seen["success"] and r["success"]
            seen["failing_rows"] += r["failing_rows"]
            seen["examples"] = list(dict.fromkeys(seen["examples"] + r["examples"]))[:EXAMPLES]
            if seen.get("observed") is None:
                seen["observed"] = r.get("observed")

    def _flush(self) -> None:
        if self.buffer:
            import pandas as pd

            frame = pd.concat(self.buffer, ignore_index=True)
            self.buffer, self.buffered = [], 0
            if self.suite is None:
                self.suite = _Suite(self.row_rules, self.kind)
            for start in range(0, len(frame), CHUNK_ROWS):
                self._merge(self.suite.run(frame.iloc[start:start + CHUNK_ROWS]))

    def result(self) -> dict[str, Any]:
        if self.rules is None:
            self._start([])
        self._flush()
        if self.distinct_rules and self.rows_total:
            values = {c: sorted(v, key=str) for c, v in self.distinct.items()}
            longest = max(len(v) for v in values.values())
            frame = pl.DataFrame({"id": [f"distinct-{i}" for i in range(longest)],
                                  **{c: v + [v[-1]] * (longest - len(v)) if v else
                                     [None] * longest for c, v in values.items()}})
            self._merge(_Suite(self.distinct_rules, f"{self.kind}-distinct").run(
                frame.to_pandas()))
        order = [r.name for r in self.rules]
        checks = sorted(self.checks.values(), key=lambda c: order.index(c["name"]))
        return {"kind": self.kind, "mode": "sample" if self.keep is not None else "full",
                "rows_total": self.rows_total, "rows_checked": self.rows_checked,
                "checks": checks, "success": all(c["success"] for c in checks)}


def manifest_checks(version: Version) -> list[dict[str, Any]]:
    """The checks named in MANIFEST_CHECKS (validation/__init__.py), in that order."""
    m = version.manifest
    out = []
    bad_stages = [s["stage"] for s in m["stages"]
                  if s["rows_in"] != s["rows_out"] + sum(s["dropped"].values())]
    out.append({"name": "row_conservation", "expectation": "manifest",
                "description": "rows_in == rows_out + dropped, every stage",
                "success": not bad_stages, "failing_rows": 0, "examples": bad_stages,
                "observed": len(m["stages"])})
    try:
        version.verify("full")
        err = None
    except ShardIntegrityError as e:
        err = str(e)
    out.append({"name": "shard_hashes", "expectation": "manifest",
                "description": "the id matches the manifest, every shard its size and sha256",
                "success": err is None, "failing_rows": 0, "examples": [err] if err else [],
                "observed": None})
    shard_rows = sum(s["rows"] for s in m["shards"])
    out.append({"name": "row_count", "expectation": "manifest",
                "description": "manifest rows == rows in the shards",
                "success": shard_rows == m["rows"], "failing_rows": 0, "examples": [],
                "observed": shard_rows})
    return out


def identifier_check(version: Version, limit: int | None) -> dict[str, Any] | None:
    """Identifiers the de-identification detector still finds in a canonical version (with
    the settings of its `deidentify` stage): fails above `limit`. Runs on de-identified
    versions (limit 0 unless given) and on any canonical version when a limit is given.
    Reports counts by entity type and row ids, never a found value."""
    from meddata.deid import ENTITIES, Detector, deid_settings, scan_version

    settings = deid_settings(version.manifest)
    if settings is None and limit is None:
        return None
    settings = settings or {}
    detector = Detector(tuple(settings.get("entities") or ENTITIES),
                        max_age=int(settings.get("max_age", 89)))
    counts, rows, ids = scan_version(version, detector)
    limit = 0 if limit is None else limit
    found = sum(counts.values())
    return {"name": "identifiers_left", "expectation": "deid detector",
            "description": f"at most {limit} identifiers found by the de-identification "
                           "detector", "success": found <= limit, "failing_rows": rows,
            "examples": ids, "observed": dict(sorted(counts.items()))}


def contaminated_ids(version: Version) -> list[str]:
    """Ids the version's decontamination stage dropped (from its rejects)."""
    import pyarrow.parquet as pq

    path = version.path / "rejects.parquet"
    if not path.exists():
        return []
    out: list[str] = []
    for batch in pq.ParquetFile(path).iter_batches(columns=["stage", "raw"]):
        frame = pl.from_arrow(batch).filter(pl.col("stage") == "decontam")
        out += [json.loads(raw)["id"] for raw in frame["raw"].to_list()]
    return out


def token_measure(version: Version):
    """(Measure, max_tokens) with the tokenizer the manifest names when it is still on
    disk, else (None, max_tokens)."""
    from pathlib import Path

    from meddata.length import Measure

    tok = (version.manifest["stats"].get("tokenizer") or {}).get("tokenizer")
    stage = next((s for s in version.manifest["stages"] if s["stage"] == "length"), {})
    max_tokens = stage.get("max_tokens")
    if not tok or not max_tokens or not Path(tok).exists() or version.kind == "pretrain":
        return None, max_tokens
    return Measure(tok), max_tokens


def sample_mask(version: Version, sample: int, seed: int = 0):
    """A `keep` function choosing exactly `sample` rows (lowest seeded hashes of the ids)."""
    hashes = [seeded_array(seed, "sample", b.column("id").to_pylist())
              for b in version.iter_batches(columns=["id"], verify="none")]
    h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
    if sample >= len(h):
        return None
    threshold = np.partition(h, sample - 1)[sample - 1]
    return lambda batch: seeded_array(seed, "sample", batch.column("id").to_pylist()) \
        <= threshold


def validate(version: Version, sample: int | None = None, bounds: Bounds | None = None
             ) -> dict[str, Any]:
    """Validate a published version: its kind's suite plus the manifest checks."""
    from meddata.builders import registry

    bounds = bounds or Bounds()
    manifest = manifest_checks(version)
    if not next(c for c in manifest if c["name"] == "shard_hashes")["success"]:
        # changed shards cannot be trusted (or even read): report that alone
        result = {"kind": version.kind, "mode": "not checked", "rows_total": version.rows,
                  "rows_checked": 0, "checks": manifest}
    else:
        measure, max_tokens = token_measure(version)
        if max_tokens and measure is not None:
            bounds.max_tokens = max_tokens
        keep = sample_mask(version, sample) if sample else None
        checker = Checker(version.kind, bounds, contaminated_ids(version),
                          tokens=measure is not None, keep=keep)
        kind = registry.get(version.kind) if version.kind != "canonical" else None
        for batch in version.iter_batches(verify="none"):  # just verified above
            if measure is not None:
                lengths = kind.length(batch, measure)
                batch = batch.append_column(TOKENS, pa.array(np.asarray(lengths, np.int32)))
            checker.feed(batch)
        result = checker.result()
        result["checks"] += manifest
        if version.kind == "canonical":
            left = identifier_check(version, bounds.max_identifiers)
            if left is not None:
                result["checks"].append(left)
        result["tokens_checked"] = measure is not None
    result["success"] = all(c["success"] for c in result["checks"])
    result["ref"] = version.ref
    result["run_at"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return result
