"""Build recipes: a YAML file (or dict) that says what goes into a built version.

Unknown keys and bad values are errors that name the key and say what is allowed. The
recipe, with every default filled in, is stored in the version's manifest, so the same
recipe and inputs give the same version id. See docs/recipes.md for every key.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("auto", "distractor", "cross_sample", "weak_model")


class RecipeError(ValueError):
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
    weight: float = 1.0             # keep this fraction of rows (seeded, by id), 0 < w <= 1

    def check(self, where: str) -> None:
        if bool(self.ref) == bool(self.source):
            raise RecipeError(f"{where}: give exactly one of `ref` (a canonical version) or "
                              "`source` (a converter name, with `paths`)")
        if self.source and not self.paths:
            raise RecipeError(f"{where}: `source: {self.source}` needs `paths`")
        if self.limit is not None and self.limit < 1:
            raise RecipeError(f"{where}.limit: must be at least 1, got {self.limit}")
        if not 0 < self.weight <= 1:
            raise RecipeError(f"{where}.weight: must be in (0, 1] (a sampling fraction), got "
                              f"{self.weight}; repeat data with training epochs instead")


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
    rejected: RejectedSpec = field(default_factory=RejectedSpec)
    dedup: dict[str, Any] | None = None     # DedupConfig keys (+ against); {} for the defaults
    decontam: dict[str, Any] | None = None  # {against: [refs], ...DecontamConfig keys}
    retrieve: dict[str, Any] | None = None  # {index: index/NAME, k: 3, tokens: 512}
    from_ref: str | None = None     # build from an existing version (kto: a preference one)
    engine: str | None = None       # local | ray: where the steps run (the same version)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is list:
        if isinstance(value, str) and args and args[0] is str:
            value = [value]
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                          f"{', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def from_dict(data: dict[str, Any], base_dir: Path | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: expected a mapping at the top, got {type(data).__name__}")
    recipe = _build(Recipe, data, "recipe")
    if recipe.kind is not None:
        from meddata.builders import registry  # the kinds, looked up by name

        if recipe.kind not in registry.names():
            raise RecipeError(f"recipe.kind: {recipe.kind!r} is not one of "
                              f"{', '.join(registry.names())}")
    if not 0 <= recipe.validation_ratio < 1:
        raise RecipeError("recipe.validation_ratio: must be in [0, 1), got "
                          f"{recipe.validation_ratio}")
    if recipe.prompt_style not in ("instruct", "plain"):
        raise RecipeError(f"recipe.prompt_style: {recipe.prompt_style!r} is not instruct or plain")
    if recipe.reasoning not in ("think", "inline", "none"):
        raise RecipeError(f"recipe.reasoning: {recipe.reasoning!r} is not think, inline or none")
    if recipe.max_tokens is not None and recipe.max_tokens < 8:
        raise RecipeError(f"recipe.max_tokens: must be at least 8, got {recipe.max_tokens}")
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
    _check_stage_config(recipe)
    if not recipe.sources and not recipe.from_ref:
        raise RecipeError("recipe.sources: give at least one source (or from_ref for kto)")
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


def _check_stage_config(recipe: Recipe) -> None:
    from meddata.dedup import DecontamConfig, DedupConfig

    for key, cls, extra in (("dedup", DedupConfig, ("against",)),
                            ("decontam", DecontamConfig, ("against",))):
        value = getattr(recipe, key)
        if value is None:
            continue
        allowed = [f.name for f in dataclasses.fields(cls)] + list(extra)
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise RecipeError(f"recipe.{key}: unknown key(s) {', '.join(unknown)}; allowed: "
                              f"{', '.join(allowed)}")
        try:
            config = cls(**{k: v for k, v in value.items() if k not in extra})
            if hasattr(config, "check"):
                config.check()
        except (TypeError, ValueError) as e:
            raise RecipeError(f"recipe.{key}: {e}") from None
    if recipe.dedup is not None and recipe.dedup.get("against") is not None:
        earlier = recipe.dedup["against"]
        if isinstance(earlier, str):
            recipe.dedup["against"] = earlier = [earlier]
        if not isinstance(earlier, list) or not all(isinstance(a, str) for a in earlier):
            raise RecipeError("recipe.dedup.against: give earlier canonical versions, for "
                              "example [canonical/medqa-v1@latest]")
    if recipe.retrieve is not None:
        r = recipe.retrieve
        unknown = [k for k in r if k not in ("index", "k", "tokens")]
        if unknown or not isinstance(r.get("index"), str):
            raise RecipeError("recipe.retrieve: give {index: index/NAME, k: 3, tokens: 512} "
                              "(k and tokens optional)")
        if not isinstance(r.get("k", 3), int) or r.get("k", 3) < 1 or \
                (r.get("tokens") is not None and (not isinstance(r["tokens"], int)
                                                  or r["tokens"] < 16)):
            raise RecipeError("recipe.retrieve: k must be a positive integer and tokens an "
                              "integer of at least 16 (or null for no limit)")
    if recipe.decontam is not None:
        against = recipe.decontam.get("against")
        if isinstance(against, str):
            recipe.decontam["against"] = against = [against]
        if not against or not all(isinstance(a, str) for a in against):
            raise RecipeError("recipe.decontam.against: give the benchmark versions, for "
                              "example [canonical/medqa-test@latest]")


def load(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe {path}: no such file") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path}: not valid YAML: {e}") from None
    try:
        return from_dict(data or {}, base_dir=path.parent)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
