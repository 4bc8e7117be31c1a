"""The build pipeline: recipe -> canonical rows -> kind rows -> checks -> published version.

Stages, each recorded with row conservation in the manifest:
  select  source versions (converted first when the recipe names raw files), filtered by
          split (default: every split but `test`), subset, weight and limit
  dedup   (recipe `dedup`) exact and near duplicates removed, survivors by rule
  decontam (recipe `decontam`) rows overlapping the benchmark versions removed
  <kind>  the kind builder: rendering, rejected responses, drops with reasons
  length  rows over `max_tokens` (tokenizer count, or an estimate) dropped as too_long
  split   train / validation by a seeded hash of the id
  pack    (pretrain with `pack: true`) documents packed into fixed-length sequences
Then the kind's validation suite runs on the rows; a failing build publishes nothing
unless `allow_invalid`, which the manifest records.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata import convert
from meddata.converters import get as get_converter
from meddata.length import Measure
from meddata.recipe import Recipe, load
from meddata.store import Store, Version

from .rejected import seeded

_SCALE = float(2**64)


def examples_dir() -> Path:
    """The bundled examples (the repository's examples/, installed as meddata.examples)."""
    return Path(str(resources.files("meddata.examples")))


def examples_recipe() -> Recipe:
    return load(examples_dir() / "recipe.yaml")


def kind_module(kind: str):
    return importlib.import_module(f"meddata.builders.{kind}")


@dataclass
class Build:
    recipe: Recipe
    kind: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    parents: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)
    rejects: list[dict[str, Any]] = field(default_factory=list)

    def stage(self, name: str, rows_in: int, rows_out: int, dropped: Counter | dict,
              **extra: Any) -> None:
        self.stages.append({"name": name, "rows_in": rows_in, "rows_out": rows_out,
                            "dropped": {k: v for k, v in dict(dropped).items() if v}, **extra})


def _fraction(seed: int, *parts: str) -> float:
    return seeded(seed, *parts) / _SCALE


def source_version(spec, store: Store, progress: bool) -> Version:
    if spec.ref:
        return store.resolve(spec.ref)
    conv = get_converter(spec.source)()
    return convert.run(conv, spec.paths, store, name=spec.name or spec.source,
                       progress=progress).version


def select(build: Build, store: Store, progress: bool) -> list[dict[str, Any]]:
    recipe, rows_in, dropped, selected = build.recipe, 0, Counter(), []
    seen: set[str] = set()
    for spec in recipe.sources:
        version = source_version(spec, store, progress)
        build.parents.append(version.as_parent())
        if version.kind != "canonical":
            raise ValueError(f"{version.ref}: sources must be canonical versions, "
                             f"not {version.kind}")
        rows = version.to_table().to_pylist()
        rows_in += len(rows)
        kept = []
        for row in rows:
            if spec.split is not None and row["split"] not in spec.split:
                dropped["split_not_selected"] += 1
            elif spec.split is None and row["split"] == "test":
                dropped["test_split"] += 1
            elif spec.subset is not None and row["subset"] != spec.subset:
                dropped["subset_not_selected"] += 1
            elif spec.weight < 1 and _fraction(recipe.seed, "weight", row["id"]) >= spec.weight:
                dropped["weight_sampled_out"] += 1
            elif row["id"] in seen:
                dropped["duplicate_id"] += 1
            else:
                seen.add(row["id"])
                kept.append(row)
        if spec.limit is not None and len(kept) > spec.limit:
            keep = set(sorted((r["id"] for r in kept),
                              key=lambda i: seeded(recipe.seed, "limit", i))[:spec.limit])
            dropped["over_limit"] += len(kept) - len(keep)
            kept = [r for r in kept if r["id"] in keep]
        selected.extend(kept)
    build.stage("select", rows_in, len(selected), dropped)
    return selected


def clean_up(build: Build, rows: list[dict[str, Any]], store: Store) -> list[dict[str, Any]]:
    """The recipe's dedup and decontam stages over the selected canonical rows."""
    from meddata import dedup as dd

    recipe = build.recipe
    steps = []
    if recipe.dedup is not None:
        steps.append(("dedup", lambda r: dd.dedup(r, dd.DedupConfig(**recipe.dedup))))
    if recipe.decontam is not None:
        cfg = {k: v for k, v in recipe.decontam.items() if k != "against"}
        benches = [store.resolve(ref) for ref in recipe.decontam["against"]]
        build.parents += [b.as_parent(role="benchmark") for b in benches]
        bench_rows = [r for b in benches for r in b.to_table().to_pylist()]
        steps.append(("decontam", lambda r: dd.decontaminate(r, bench_rows,
                                                             dd.DecontamConfig(**cfg))))
    for stage, fn in steps:
        by_id = {r["id"]: r for r in rows}
        kept, dropped, summary = fn(rows)
        reasons = Counter(d["reason"] for d in dropped)
        build.stage(stage, len(rows), len(kept), reasons)
        build.reports[stage] = {"summary": summary, "dropped": dropped[:dd.REPORT_EXAMPLES],
                                "dropped_listed": min(len(dropped), dd.REPORT_EXAMPLES)}
        for d in dropped:
            row = by_id[d["id"]]
            build.rejects.append({"stage": stage, "source": row["source"], "file": None,
                                  "position": None, "raw": json.dumps(row, ensure_ascii=False,
                                                                      default=str),
                                  "reason": d["reason"], "detail": json.dumps(
                                      {k: v for k, v in d.items() if k not in ("id", "reason")})})
        rows = kept
    return rows


def percentiles(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    s = sorted(values)

    def at(q: float) -> int:
        return s[min(len(s) - 1, int(q * len(s)))]
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": s[-1]}


class ValidationFailed(ValueError):
    """A built version failed its suite and --allow-invalid was not given."""

    def __init__(self, result: dict[str, Any]):
        failed = [c for c in result["checks"] if not c["success"]]
        super().__init__("the built rows fail validation, nothing published: " + "; ".join(
            f"{c['name']} ({c['failing_rows']} rows, e.g. {', '.join(map(str, c['examples']))})"
            for c in failed) + " (rerun with --allow-invalid to publish anyway)")
        self.result = result


def validate_before_publish(kind: str, table: pa.Table, recipe: Recipe,
                            lengths: list[int] | None, allow_invalid: bool) -> dict[str, Any]:
    import polars as pl

    from meddata.validation.run import Bounds, check_rows

    tokens = pl.Series("tokens", lengths) if lengths is not None else None
    result = check_rows(kind, pl.from_arrow(table).lazy(),
                        Bounds(max_tokens=recipe.max_tokens), tokens=tokens)
    if not result["success"] and not allow_invalid:
        raise ValidationFailed(result)
    return {"success": result["success"], "allow_invalid": allow_invalid,
            "mode": result["mode"], "rows_checked": result["rows_checked"],
            "failed": [c for c in result["checks"] if not c["success"]],
            "checks": [c["name"] for c in result["checks"]]}


def run(kind: str, recipe: Recipe, store: Store, name: str | None = None,
        progress: bool = True, allow_invalid: bool = False) -> tuple[Version, Build]:
    """Build `kind` from `recipe`, validate it, and publish `<kind>/<name>`."""
    module = kind_module(kind)
    build = Build(recipe=recipe, kind=kind)
    measure = Measure(recipe.tokenizer)
    schema = module.SCHEMA
    if kind == "kto" and recipe.from_ref:
        pref = store.resolve(recipe.from_ref)
        if pref.kind != "preference":
            raise ValueError(f"from_ref {recipe.from_ref}: expected a preference version")
        build.parents.append(pref.as_parent())
        built = pref.to_table().to_pylist()  # kto rows stay pairs until the unpair stage
        build.stage("select", len(built), len(built), {})
    else:
        rows = clean_up(build, select(build, store, progress), store)
        # kto is built as preference pairs, measured and split as pairs, then unpaired
        builder = kind_module("preference") if kind == "kto" else module
        built, dropped = builder.build(rows, recipe, store=store, progress=progress,
                                       reports=build.reports)
        build.stage("preference" if kind == "kto" else kind, len(rows), len(built), dropped)

    lengths: list[int] = []
    measured_kind = "preference" if kind == "kto" else kind
    kept = []
    too_long = 0
    for row in built:
        n = measure.row(measured_kind, row)
        if recipe.max_tokens is not None and n > recipe.max_tokens and not recipe.pack:
            too_long += 1
            continue
        lengths.append(n)
        kept.append(row)
    build.stage("length", len(built), len(kept), {"too_long": too_long},
                max_tokens=recipe.max_tokens, **measure.describe())
    built = kept

    for row in built:
        val = recipe.validation_ratio and _fraction(recipe.seed, "split", row["id"]) < \
            recipe.validation_ratio
        row["split"] = "validation" if val else "train"
    build.stage("split", len(built), len(built), {},
                validation=sum(r["split"] == "validation" for r in built))

    if kind == "kto":
        n_pairs = len(built)
        built = module.unpair(built, recipe.seed)
        build.stage("unpair", n_pairs, n_pairs, {}, kto_rows=len(built))
        build.stats["kto"] = module.stats(built)
    if kind == "pretrain" and recipe.pack:
        if measure.tok is None:
            raise ValueError("packing needs a tokenizer")
        packed: list[dict[str, Any]] = []
        totals = Counter()
        for split in ("train", "validation"):
            for lang in sorted({r["lang"] for r in built}):  # one language per sequence
                seqs, info = module.pack([r for r in built if r["split"] == split
                                          and r["lang"] == lang], measure.tok,
                                         recipe.max_tokens)
                for s in seqs:
                    s["id"] = f"{split}/{lang}/{s['id']}"
                packed.extend(seqs)
                totals.update({k: v for k, v in info.items() if k != "max_len"})
        build.stage("pack", len(built), len(built), {}, sequences=totals["sequences"],
                    tokens=totals["tokens"], max_len=recipe.max_tokens)
        built = packed
        schema = module.PACKED_SCHEMA
    build.stats["length_tokens"] = {**percentiles(lengths),
                                    "counter": measure.describe()["counter"]}
    if measure.tok is not None:
        build.stats["tokenizer"] = measure.describe()
    name = name or recipe.name or "default"
    table = pa.Table.from_pylist(built, schema=schema)
    # token lengths line up with the rows only while rows are neither unpaired nor packed
    checked_lengths = lengths if measure.tok is not None and kind != "kto" and not (
        kind == "pretrain" and recipe.pack) else None
    validation = validate_before_publish(kind, table, recipe, checked_lengths, allow_invalid)
    with store.publisher(kind, name, schema, inputs=[{"ref": p["ref"]} for p in build.parents],
                         recipe=recipe.to_dict(), parents=build.parents,
                         stats=build.stats, validation=validation, **build.reports) as pub:
        pub.write(table)
        pub.reject(build.rejects)
        for st in build.stages:
            st = dict(st)
            pub.add_stage(st.pop("name"), st.pop("rows_in"), st.pop("rows_out"),
                          st.pop("dropped"), **st)
    return pub.version, build
