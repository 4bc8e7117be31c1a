"""Run a kind's suite on a version (or on rows about to be published) and report.

A result is a plain dict: `success`, `mode` ("full" or "sample"), rows checked and total,
and one entry per check with its name, the expectation behind it, success, the number of
failing rows and up to five example ids. Checks on the manifest (row conservation of every
stage, shard hashes, row counts) come after the Great Expectations results, in the same
shape.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import polars as pl

from meddata.store import ShardIntegrityError, Version

from .suites import Bounds, Rule, rules

EXAMPLES = 5


def _gx_run(frame: pl.DataFrame, suite_rules: list[Rule], name: str) -> list[dict[str, Any]]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("meddata").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe("all rows")
    suite = context.suites.add(gx.ExpectationSuite(name=f"meddata.{name}"))
    for rule in suite_rules:
        cls = getattr(gx.expectations, rule.expectation)
        suite.add_expectation(cls(**rule.kwargs, meta={"meddata_check": rule.name},
                                  description=rule.description or rule.name))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{name} validation", data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": frame.to_pandas()},
        result_format={"result_format": "SUMMARY", "unexpected_index_column_names": ["id"],
                       "partial_unexpected_count": 20})
    by_name = {r.name: r for r in suite_rules}
    out = []
    for r in result.results:
        check = r.expectation_config.meta.get("meddata_check")
        res = r.result or {}
        examples = []
        for item in res.get("partial_unexpected_index_list") or []:
            if isinstance(item, dict) and item.get("id") not in examples:
                examples.append(item.get("id"))
        if not examples and check == "unique_ids":
            examples = list(dict.fromkeys(res.get("partial_unexpected_list") or []))
        failing = res.get("unexpected_count")
        if failing is None and not r.success:
            failing = frame.height if check != "label_has_both_values" else 0
        out.append({"name": check, "expectation": r.expectation_config.type,
                    "description": by_name[check].description, "success": bool(r.success),
                    "failing_rows": int(failing or 0),
                    "examples": [e for e in examples if e is not None][:EXAMPLES],
                    "observed": _plain(res.get("observed_value"))})
    return out


def _plain(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def derive(lazy: pl.LazyFrame, suite_rules: list[Rule], extra: dict[str, pl.Expr]
           ) -> pl.DataFrame:
    columns: dict[str, pl.Expr] = {"id": pl.col("id")}
    for rule in suite_rules:
        columns.update(rule.derive)
    columns.update(extra)
    if any(r.name.startswith("label_") for r in suite_rules):
        columns["label"] = pl.col("label")
    if any(r.name == "answer_present" for r in suite_rules):
        columns["answer"] = pl.col("answer")
    return lazy.select(**columns).collect(engine="streaming")


def check_rows(kind: str, lazy: pl.LazyFrame, bounds: Bounds | None = None,
               contaminated: list[str] | None = None, tokens: pl.Series | None = None,
               sample: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Run the suite of `kind` over rows (a polars LazyFrame of the kind's columns)."""
    bounds = bounds or Bounds()
    suite_rules = rules(kind, bounds, contaminated, token_column=tokens is not None)
    frame = derive(lazy, suite_rules, {})
    if tokens is not None:
        frame = frame.with_columns(tokens=tokens)
    total = frame.height
    mode = "full"
    if sample is not None and sample < total:
        frame = frame.sample(n=sample, seed=seed)
        mode = "sample"
    checks = _gx_run(frame, suite_rules, kind) if total else []
    return {"kind": kind, "mode": mode, "rows_total": total, "rows_checked": frame.height,
            "checks": checks, "success": all(c["success"] for c in checks)}


def manifest_checks(version: Version) -> list[dict[str, Any]]:
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
                "description": "every shard matches its size and sha256", "success": err is None,
                "failing_rows": 0, "examples": [err] if err else [], "observed": None})
    shard_rows = sum(s["rows"] for s in m["shards"])
    out.append({"name": "row_count", "expectation": "manifest",
                "description": "manifest rows == rows in the shards",
                "success": shard_rows == m["rows"], "failing_rows": 0, "examples": [],
                "observed": shard_rows})
    return out


def contaminated_ids(version: Version) -> list[str]:
    """Ids the version's decontamination stage dropped (from its rejects)."""
    rejects = version.rejects()
    if not rejects.num_rows:
        return []
    frame = pl.from_arrow(rejects).filter(pl.col("stage") == "decontam")
    return [json.loads(raw)["id"] for raw in frame["raw"].to_list()]


def token_lengths(version: Version, lazy: pl.LazyFrame) -> tuple[pl.Series | None, int | None]:
    """Token lengths with the tokenizer the manifest names, when it is still on disk."""
    from pathlib import Path

    from meddata.length import Measure

    tok = (version.manifest["stats"].get("tokenizer") or {}).get("tokenizer")
    stage = next((s for s in version.manifest["stages"] if s["stage"] == "length"), {})
    max_tokens = stage.get("max_tokens")
    if not tok or not max_tokens or not Path(tok).exists() or version.kind == "pretrain":
        return None, max_tokens
    measure = Measure(tok)
    kind = "preference" if version.kind == "kto" else version.kind
    rows = lazy.collect().to_dicts()
    if version.kind == "kto":
        lengths = [measure.messages(r["prompt"] + r["completion"]) for r in rows]
    else:
        lengths = [measure.row(kind, r) for r in rows]
    return pl.Series("tokens", lengths), max_tokens


def validate(version: Version, sample: int | None = None, bounds: Bounds | None = None
             ) -> dict[str, Any]:
    """Validate a published version: its kind's suite plus the manifest checks."""
    bounds = bounds or Bounds()
    manifest = manifest_checks(version)
    if not next(c for c in manifest if c["name"] == "shard_hashes")["success"]:
        # changed shards cannot be trusted (or even read): report that alone
        result = {"kind": version.kind, "mode": "not checked", "rows_total": version.rows,
                  "rows_checked": 0, "checks": manifest}
    else:
        lazy = version.scan(verify="none")  # just verified above
        tokens, max_tokens = token_lengths(version, lazy)
        if max_tokens and tokens is not None:
            bounds.max_tokens = max_tokens
        result = check_rows(version.kind, lazy, bounds, contaminated_ids(version), tokens,
                            sample)
        result["checks"] += manifest
        result["tokens_checked"] = tokens is not None
    result["success"] = all(c["success"] for c in result["checks"])
    result["ref"] = version.ref
    result["run_at"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return result
