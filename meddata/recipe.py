"""Build recipes: a YAML file (or dict) that says what goes into a built version.

Unknown keys and bad values are errors that name the key and say what is allowed. The
recipe, with every default filled in, is stored in the version's manifest, so the same
recipe and inputs give the same version id. See docs/recipes.md for every key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddata.steps import registry
from meddata.steps.decontam import DecontamSettings
from meddata.steps.dedup import DedupSettings
from meddata.steps.mix import MixSettings
from meddata.steps.registry import SettingsError, StepSpec
from meddata.steps.retrieve import RetrieveSettings

STRATEGIES = ("auto", "distractor", "cross_sample", "weak_model")


class RecipeError(SettingsError):
    """A recipe that cannot be used: unknown key, wrong type, value out of range."""


@dataclass
class SourceSpec:
    ref: str | None = None          # an existing version: canonical/name@tag
    source: str | None = None       # or a converter name plus paths to convert first
    paths: list[str] = field(default_factory=list)
    name: str | None = None         # canonical name to publish the conversion under
    subset: str | None = None       # keep only this subset
    split: list[str] | None = None  # source splits to keep; default: every split but `test`
    limit: int | None = None        # at most this many rows (first by seeded hash order)
    weight: float = 1.0             # below 1: keep this fraction (seeded, by id); above: repeat
    group: str | None = None        # its group for `mix` shares (default: its own name)
    license: str | None = None      # `source:` only: the files' licence, instead of the release's

    def check(self, where: str) -> None:
        if bool(self.ref) == bool(self.source):
            raise RecipeError(f"{where}: give exactly one of `ref` (a canonical version) or "
                              "`source` (a converter name, with `paths`)")
        if self.source and not self.paths:
            raise RecipeError(f"{where}: `source: {self.source}` needs `paths`")
        if self.license is not None:
            from meddata.licenses import LicenseError, normalize

            if self.ref:
                raise RecipeError(f"{where}.license: a `ref` version keeps the licence it "
                                  "recorded; `license` applies to `source` conversions")
            try:
                self.license = normalize(self.license)
            except LicenseError as e:
                raise RecipeError(f"{where}.license: {e}") from None
        if self.limit is not None and self.limit < 1:
            raise RecipeError(f"{where}.limit: must be at least 1, got {self.limit}")
        if not 0 < self.weight <= 100:
            raise RecipeError(f"{where}.weight: must be in (0, 100] (below 1 a sampling "
                              f"fraction, above 1 a repeat factor), got {self.weight}")


@dataclass
class RejectedSpec:
    strategy: str = "auto"          # auto = distractor for MCQ and yes/no, cross_sample else
    similarity: float = 0.8         # drop a rejected whose shingle Jaccard to chosen >= this
    # weak_model only:
    model: str | None = None        # a local folder, a hub id (online) or an alias
    revision: str | None = None
    backend: str = "transformers"   # transformers | vllm
    max_new_tokens: int = 256
    temperature: float = 0.7        # 0 = greedy
    top_p: float = 0.9
    batch_size: int = 8
    seed: int = 0
    dtype: str = "auto"             # auto | float32 | bfloat16 | float16
    device: str = "auto"            # auto | cpu | cuda | cuda:1 ...
    trust_remote_code: bool = False
    drop_unfinished: bool = True    # drop outputs that hit max_new_tokens without EOS

    def check(self, where: str) -> None:
        if self.strategy not in STRATEGIES:
            raise RecipeError(f"{where}.strategy: {self.strategy!r} is not one of "
                              f"{', '.join(STRATEGIES)}")
        if not 0 < self.similarity <= 1:
            raise RecipeError(f"{where}.similarity: must be in (0, 1], got {self.similarity}")
        if self.strategy == "weak_model" and not self.model:
            raise RecipeError(f"{where}: strategy weak_model needs `model` (a local folder, a "
                              "hub id, or smollm2-135m-instruct)")
        if self.backend not in ("transformers", "vllm"):
            raise RecipeError(f"{where}.backend: {self.backend!r} is not transformers or vllm")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise RecipeError(f"{where}: max_new_tokens and batch_size must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise RecipeError(f"{where}: temperature must be >= 0 and top_p in (0, 1]")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise RecipeError(f"{where}.dtype: {self.dtype!r} is not auto, float32, bfloat16 "
                              "or float16")


@dataclass
class Recipe:
    kind: str | None = None
    name: str | None = None
    seed: int = 0
    sources: list[SourceSpec] = field(default_factory=list)
    validation_ratio: float = 0.0   # share of rows (by seeded hash of id) in split validation
    prompt_style: str = "instruct"  # instruct | plain
    system_prompt: str | None = None
    reasoning: str = "inline"       # think | inline | none
    max_tokens: int | None = None   # drop rows longer than this (tokens)
    tokenizer: str | None = None    # local tokenizer folder for counting (and packing)
    pack: bool = False              # pretrain: also pack input_ids (needs tokenizer, max_tokens)
    tokenizer_backend: str | None = None  # auto | fast | hf (meddata.encoder; ids never differ)
    rejected: RejectedSpec = field(default_factory=RejectedSpec)
    # canonical-stage steps, in this order: the curation list, then dedup, decontam and
    # retrieve (each step's typed settings: meddata/steps/<name>.py; docs/steps.md)
    curate: list[StepSpec] = field(default_factory=list)  # [{step: {settings}}, ...]
    dedup: DedupSettings | None = None        # {} for the defaults
    decontam: DecontamSettings | None = None  # {against: [benchmark refs], ...}
    retrieve: RetrieveSettings | None = None  # {index: index/NAME, k: 3, tokens: 512}
    from_ref: str | None = None     # build from an existing version (kto: a preference one)
    engine: str | None = None       # local | ray: where the steps run (the same version)
    licenses: dict[str, Any] | None = None  # {allow: [ids]} or {deny: [ids]}: refuse others
    mix: MixSettings | None = None  # {by: rows|tokens, total, shares: {group: share}}

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
               for k, v in out.items()}
        out["sources"] = [dataclasses.asdict(s) for s in self.sources]
        out["curate"] = [spec.to_dict() for spec in self.curate]
        return out

    def canonical_steps(self) -> list[StepSpec]:
        """The canonical-stage steps a build runs after selecting its sources, in order."""
        specs = list(self.curate)
        for key in ("dedup", "decontam", "retrieve"):
            settings = getattr(self, key)
            if settings is not None:
                specs.append(StepSpec(key, settings))
        return specs

    def with_overrides(self, refs: tuple[str, ...] = (), **overrides: Any) -> Recipe:
        """A copy with command-line overrides applied: `refs` become more sources, a value
        of None leaves the recipe's; `rejected` and `retrieve` are merged key by key."""
        data = self.to_dict()
        data["sources"] = data["sources"] + [{"ref": r} for r in refs]
        for key in ("rejected", "retrieve"):
            more = overrides.pop(key, None) or {}
            if more:
                data[key] = {**(data.get(key) or {}), **more}
        data.update({k: v for k, v in overrides.items() if v is not None})
        return from_dict(data)


def from_dict(data: dict[str, Any], base_dir: Path | None = None,
              check_sources: bool = True) -> Recipe:
    """A checked recipe from a mapping; paths relative to `base_dir` (the recipe file's
    folder). `check_sources=False` allows a recipe without sources (a base that command
    line arguments complete, see `with_overrides`)."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: expected a mapping at the top, got {type(data).__name__}")
    data = dict(data)
    curate = data.pop("curate", None)
    try:
        recipe = registry.build(Recipe, data, "recipe")
        recipe.curate = registry.parse_list(curate, "recipe.curate")
        for key in ("dedup", "decontam", "retrieve", "mix"):
            settings = getattr(recipe, key)
            if settings is not None:
                try:
                    settings.check()
                except SettingsError as e:
                    raise RecipeError(f"recipe.{key}: {e}") from None
    except RecipeError:
        raise
    except SettingsError as e:
        raise RecipeError(str(e)) from None
    if recipe.kind is not None:
        from meddata.builders import registry as kinds  # the kinds, looked up by name

        if recipe.kind not in kinds.names():
            raise RecipeError(f"recipe.kind: {recipe.kind!r} is not one of "
                              f"{', '.join(kinds.names())}")
    if not 0 <= recipe.validation_ratio < 1:
        raise RecipeError("recipe.validation_ratio: must be in [0, 1), got "
                          f"{recipe.validation_ratio}")
    if recipe.prompt_style not in ("instruct", "plain"):
        raise RecipeError(f"recipe.prompt_style: {recipe.prompt_style!r} is not instruct or plain")
    if recipe.reasoning not in ("think", "inline", "none"):
        raise RecipeError(f"recipe.reasoning: {recipe.reasoning!r} is not think, inline or none")
    if recipe.max_tokens is not None and recipe.max_tokens < 8:
        raise RecipeError(f"recipe.max_tokens: must be at least 8, got {recipe.max_tokens}")
    if recipe.tokenizer_backend not in (None, "auto", "fast", "hf"):
        raise RecipeError(f"recipe.tokenizer_backend: {recipe.tokenizer_backend!r} is not "
                          "auto, fast or hf")
    if recipe.pack and not (recipe.tokenizer and recipe.max_tokens):
        raise RecipeError("recipe.pack: packing needs `tokenizer` and `max_tokens`")
    for i, src in enumerate(recipe.sources):
        src.check(f"recipe.sources[{i}]")
        if base_dir is not None:
            _check_relative_paths(src.paths, base_dir, f"recipe.sources[{i}].paths")
            src.paths = [str(p if Path(p).is_absolute() else (base_dir / p)) for p in src.paths]
    if base_dir is not None and recipe.tokenizer and not Path(recipe.tokenizer).is_absolute() \
            and (base_dir / recipe.tokenizer).exists():
        recipe.tokenizer = str(base_dir / recipe.tokenizer)
    recipe.rejected.check("recipe.rejected")
    if recipe.engine not in (None, "local", "ray"):
        raise RecipeError(f"recipe.engine: {recipe.engine!r} is not local or ray")
    from meddata.licenses import LicenseError, check_policy_settings

    try:
        check_policy_settings(recipe.licenses)
    except LicenseError as e:
        raise RecipeError(str(e)) from None
    if check_sources and not recipe.sources and not recipe.from_ref:
        raise RecipeError("recipe.sources: give at least one source (or from_ref for kto)")
    if check_sources:
        from meddata.steps.mix import check_recipe

        try:
            check_recipe(recipe)
        except SettingsError as e:
            raise RecipeError(str(e)) from None
    return recipe


def _check_relative_paths(paths: list[str], base_dir: Path, where: str) -> None:
    """A relative path that is not there: one line saying that a recipe's paths are relative
    to the recipe file's folder (a single `org/name` may be a hub id, checked later)."""
    if len(paths) == 1 and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", paths[0]) \
            and not (base_dir / paths[0]).exists():
        return
    for p in paths:
        if not Path(p).is_absolute() and not (base_dir / p).exists():
            raise RecipeError(f"{where}: {p} is not there: paths in a recipe are relative to "
                              f"the recipe file's folder ({base_dir}), so it was looked for "
                              f"at {base_dir / p}; give a path from that folder, or an "
                              "absolute one")


def load(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe {path}: no such file") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path}: not valid YAML: {e}") from None
    except RecursionError:
        raise RecipeError(f"recipe {path}: nested too deeply to read (lists or mappings inside "
                          "each other hundreds of levels down); a recipe is a few levels "
                          "deep: see docs/recipes.md") from None
    try:
        return from_dict(data or {}, base_dir=path.parent)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    except RecursionError:
        raise RecipeError(f"recipe {path}: a value is nested too deeply (hundreds of levels); "
                          "a recipe is a few levels deep: see docs/recipes.md") from None
