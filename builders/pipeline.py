"""The build: a recipe's rows flow as Arrow batches through a list of steps into a
published, validated version.

    select    the recipe's canonical sources (converted first when it names raw files), by
              split (default: every split but `test`), subset, weight and limit
    curate    (recipe `curate`) the named curation steps, in the recipe's order
    dedup     (recipe `dedup`) exact and near duplicates removed, survivors by rule
    decontam  (recipe `decontam`) rows overlapping the benchmark versions removed
    retrieve  (recipe `retrieve`) passages of an index added to each row's context
    mix       (recipe `mix`, or a source `weight` above 1) groups sampled down or repeated
              up to their shares (meddata/steps/mix.py)
    ...       the kind's own steps, from its module: render (or pair), length, split, and
              for some kinds more (kto: unpair; pretrain with `pack: true`: pack)

A kind built from another version (`from_ref`, e.g. kto from preference) starts from that
version's rows instead of select and clean-up. The kind's validation suite checks the rows
as they are written; a failing build publishes nothing unless `allow_invalid`, which the
manifest records. Memory holds a batch of rows plus each step's compact state.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata import canonical, convert, engines, runner
from meddata.converters import get as get_converter
from meddata.engines.base import Engine
from meddata.length import Measure
from meddata.recipe import Recipe, load
from meddata.steps import mix
from meddata.steps.registry import Context as StepContext
from meddata.steps.select import SPEC, Select
from meddata.store import Store, Version

from . import registry


def examples_dir() -> Path:
    """The bundled examples (the repository's examples/, installed as meddata.examples)."""
    return Path(str(resources.files("meddata.examples")))


def examples_recipe() -> Recipe:
    return load(examples_dir() / "recipe.yaml")


@dataclass
class Context:
    """What a kind's steps may use besides the recipe."""

    store: Store
    measure: Measure
    progress: bool


class ValidationFailed(ValueError):
    """A built version failed its suite and --allow-invalid was not given."""

    def __init__(self, result: dict[str, Any]):
        failed = [c for c in result["checks"] if not c["success"]]
        super().__init__("the built rows fail validation, nothing published: " + "; ".join(
            f"{c['name']} ({c['failing_rows']} rows, e.g. {', '.join(map(str, c['examples']))})"
            for c in failed) + " (rerun with --allow-invalid to publish anyway)")
        self.result = result


def source_version(spec, store: Store, progress: bool, engine: Engine) -> Version:
    if spec.ref:
        return store.resolve(spec.ref)
    conv = get_converter(spec.source)()
    return convert.publish(conv, spec.paths, store, name=spec.name or spec.source,
                           progress=progress, engine=engine, license=spec.license).version


def check_licenses(recipe: Recipe, store: Store) -> None:
    """Refuse, before any work, a build whose sources' licences the recipe's `licenses`
    policy does not allow (a `source` by its converter's licence or its `license`)."""
    from meddata import licenses

    if not recipe.licenses:
        return
    if recipe.from_ref:
        found = [(recipe.from_ref,
                  licenses.of_manifest(store.resolve(recipe.from_ref).manifest))]
    else:
        found = []
        for i, s in enumerate(recipe.sources):
            if s.ref:
                entries = licenses.of_manifest(store.resolve(s.ref).manifest)
            else:
                try:
                    entries = [licenses.for_converter(get_converter(s.source), s.license)]
                except KeyError as e:
                    raise ValueError(f"recipe.sources[{i}]: {e.args[0]}") from None
            found.append((f"recipe.sources[{i}]", entries))
    licenses.check_policy(recipe.licenses, found)


def build(kind_name: str, recipe: Recipe, store: Store, name: str | None = None,
          progress: bool = True, allow_invalid: bool = False, report: bool = True,
          engine: Engine | None = None) -> Version:
    """Build `kind_name` from `recipe`, validate it, and publish `<kind>/<name>` (with its
    report.html unless `report` is False). `engine` (default: the recipe's `engine`, else
    MEDDATA_ENGINE, else local) says where the steps run."""
    engine = engine or engines.choose(recipe_engine=recipe.engine)
    with engine.session():  # one Ray for the conversions and the build
        return _build(kind_name, recipe, store, name, progress, allow_invalid, report, engine)


def _build(kind_name: str, recipe: Recipe, store: Store, name: str | None, progress: bool,
           allow_invalid: bool, report: bool, engine: Engine) -> Version:
    from meddata.validation.run import Checker
    from meddata.validation.suites import Bounds

    kind = registry.get(kind_name)
    check_licenses(recipe, store)
    measure = Measure(recipe.tokenizer, cache_dir=store.root / ".cache" / "tokens",
                      backend=recipe.tokenizer_backend)
    ctx = Context(store, measure, progress)
    if recipe.from_ref:
        parent = store.resolve(recipe.from_ref)
        if parent.kind not in kind.from_kinds:
            raise ValueError(f"from {recipe.from_ref}: a {kind.name} build starts from "
                             f"{' or '.join(kind.from_kinds) or 'canonical sources'}, not "
                             f"{parent.kind}")
        inputs, parents = [parent], [parent.as_parent()]
        read = runner.read_versions(inputs)
        steps = kind.steps(recipe, ctx)
        name = name or recipe.name or parent.name
    else:
        inputs = [source_version(spec, store, progress, engine) for spec in recipe.sources]
        for v in inputs:
            if v.kind != "canonical":
                raise ValueError(f"{v.ref}: sources must be canonical versions, not {v.kind}")
        parents = [v.as_parent() for v in inputs]
        read = runner.read_versions(inputs, tag=lambda i, b: b.append_column(
            SPEC, pa.array([i] * b.num_rows, pa.int32())))
        cleaning, more = canonical.build_steps(
            recipe.canonical_steps(), StepContext(store, recipe.seed, measure, progress))
        parents += more
        select, mixing = Select(recipe.sources, recipe.seed), mix.steps_for(recipe,
                                                                           recipe.tokenizer)
        select.keep_spec = bool(mixing)  # the mix step reads each row's source
        steps = [select, *cleaning, *mixing, *kind.steps(recipe, ctx)]
        name = name or recipe.name or "default"
    read = runner.with_progress(read, f"build {kind.name}", sum(v.rows for v in inputs),
                                progress)
    checker = Checker(kind.name, Bounds(max_tokens=recipe.max_tokens),
                      tokens=measure.has_tokenizer)

    def finish(extra: dict[str, Any]) -> None:
        result = checker.result()
        if not result["success"] and not allow_invalid:
            raise ValidationFailed(result)
        extra["validation"] = {
            "success": result["success"], "allow_invalid": allow_invalid,
            "mode": result["mode"], "rows_checked": result["rows_checked"],
            "tokens_checked": checker.tokens,
            "failed": [c for c in result["checks"] if not c["success"]],
            "checks": [c["name"] for c in result["checks"]],
            "results": [{k: c.get(k) for k in ("name", "expectation", "description", "success",
                                                "failing_rows", "observed")}
                        for c in result["checks"]]}
        if measure.has_tokenizer:
            extra.setdefault("stats", {})["tokenizer"] = measure.describe()
            extra["stats"]["token_cache"] = {"hits": measure.cache_hits,
                                             "misses": measure.cache_misses}

    return runner.publish(store, kind.name, name, kind.output_schema(recipe), read, steps,
                          manifest={"inputs": [{"ref": p["ref"]} for p in parents],
                                    "recipe": recipe.to_dict(), "parents": parents,
                                    "steps": [_describe(s) for s in steps]},
                          engine=engine, check=checker, finish=finish, report=report)


def _describe(step) -> dict[str, Any]:
    return {"step": step.name, "class": f"{type(step).__module__}.{type(step).__name__}",
            "needs": list(step.needs), "adds": list(step.adds), "passes": step.passes}


def run_rows(kind_name: str, rows: list[dict[str, Any]], recipe: Recipe,
             store: Store | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """A kind's own steps over canonical rows in memory (tests, notebooks): (the built
    rows, drops by reason)."""
    import tempfile

    from meddata.engines.local import run_rows
    from meddata.schema import CANONICAL

    kind = registry.get(kind_name)
    with tempfile.TemporaryDirectory() as tmp:
        store = store or Store(Path(tmp) / "store")
        ctx = Context(store, Measure(recipe.tokenizer, backend=recipe.tokenizer_backend),
                      progress=False)
        out, ledger = run_rows(kind.steps(recipe, ctx), rows, CANONICAL, Path(tmp))
    dropped: dict[str, int] = {}
    for stage in ledger.stages():
        for reason, n in stage["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    names = set(kind.output_schema(recipe).names)
    return [{k: v for k, v in r.items() if k in names} for r in out], dropped

