"""Canonical-stage steps over a canonical version, published as a new canonical version:
what `meddata dedup`, `meddata decontam` and `meddata curate` do (and, inside a build, what
runs between selecting the sources and the kind's own steps).

Each step is named in a list of `StepSpec`s (meddata.steps.registry), built with a
`Context` that resolves the versions its settings name; the versions a step read (earlier
versions for dedup, benchmarks, an index) become parents of the new version.
"""

from __future__ import annotations

from typing import Any

from meddata.engines.base import Engine
from meddata.engines.local import LocalEngine
from meddata.schema import CANONICAL
from meddata.steps.base import Step
from meddata.steps.registry import Context, StepSpec, parse_list
from meddata.store import Store, Version


def build_steps(specs: list[StepSpec], context: Context) -> tuple[list[Step], list[dict[str, Any]]]:
    """The steps of `specs`, and the versions they read (as parents)."""
    steps, parents = [], []
    for spec in specs:
        step = spec.make(context)
        steps.append(step)
        parents += step.parents() if hasattr(step, "parents") else []
    return steps, parents


def describe(step: Step, spec: StepSpec) -> dict[str, Any]:
    """A step's settings as the manifest records them."""
    config = getattr(step, "report_config", None)
    return config() if config is not None else spec.settings.to_dict()


def publish(store: Store, ref: str, specs: list[StepSpec], name: str,
            progress: bool = False, engine: Engine | None = None) -> Version:
    """Run `specs` in order over canonical version `ref` and publish canonical/<name> (on
    `engine`, default local; the same version on every engine)."""
    from meddata import runner

    engine = engine or LocalEngine()
    version = store.resolve(ref)
    if version.kind != "canonical":
        what = " and ".join(s.name for s in specs) or "these steps"
        raise ValueError(f"{version.ref}: {what} work on canonical versions, not "
                         f"{version.kind}")
    steps, parents = build_steps(specs, Context(store, progress=progress))
    parents = [version.as_parent(), *parents]
    label = "+".join(s.name for s in specs)
    read = runner.with_progress(runner.read_versions([version]), label, version.rows, progress)
    recipe = {spec.name: describe(step, spec) for spec, step in zip(specs, steps)}
    if any(spec.name not in ("dedup", "decontam") for spec in specs):
        recipe = {"curate": [{spec.name: describe(step, spec)}
                             for spec, step in zip(specs, steps)]}
    return runner.publish(store, "canonical", name, CANONICAL, read, steps,
                          manifest={"inputs": [{"ref": p["ref"]} for p in parents],
                                    "recipe": recipe, "parents": parents},
                          engine=engine)


def dedup(store: Store, ref: str, name: str | None = None, settings: dict[str, Any] | None = None,
          progress: bool = False, engine: Engine | None = None) -> Version:
    """Deduplicate canonical `ref` and publish canonical/<name> (default <name>-dedup);
    `settings` are the dedup step's (meddata.steps.dedup.DedupSettings)."""
    specs = parse_list([{"dedup": settings or {}}], "dedup")
    return publish(store, ref, specs, name or f"{store.resolve(ref).name}-dedup", progress,
                   engine)


def decontam(store: Store, ref: str, settings: dict[str, Any], name: str | None = None,
             progress: bool = False, engine: Engine | None = None) -> Version:
    """Drop rows of canonical `ref` that overlap the benchmarks in `settings["against"]`
    and publish canonical/<name> (default <name>-decontam)."""
    specs = parse_list([{"decontam": settings}], "decontam")
    return publish(store, ref, specs, name or f"{store.resolve(ref).name}-decontam",
                   progress, engine)


def curate(store: Store, ref: str, steps: Any, name: str | None = None,
           progress: bool = False, engine: Engine | None = None) -> Version:
    """Run a curation list (`[{name: {settings}}, ...]`, as in a recipe's `curate:`) over
    canonical `ref` and publish canonical/<name> (default <name>-curated)."""
    specs = parse_list(steps, "steps")
    if not specs:
        raise ValueError("the steps list is empty: give at least one step, for example "
                         "[{normalize: {}}]")
    return publish(store, ref, specs, name or f"{store.resolve(ref).name}-curated", progress,
                   engine)
