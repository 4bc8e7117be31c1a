"""Named steps: each lives in one module of meddata/steps/ as `STEP`, a `Step` subclass with
a typed `settings_class`, and is found here by its name.

A recipe lists canonical-stage steps by name (`curate:`, and the `dedup`, `decontam` and
`retrieve` keys), `meddata curate --steps FILE` takes the same list, and `--help` and the
docs list every step with its settings from here. Modules load when a step is first asked
for; `register` adds one at run time (the tests register a toy step).

Settings are dataclasses deriving from `Settings`: each field has a default and a help
text (`setting(default, "help")`), `check()` validates the values, and `parse(data,
where)` builds them from a mapping, naming a misspelled key with a "did you mean".
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types
import typing
from dataclasses import dataclass
from typing import Any

MODULES = {
    "normalize": "meddata.steps.normalize",
    "chinese": "meddata.steps.chinese",
    "language": "meddata.steps.language",
    "quality": "meddata.steps.quality",
    "perplexity": "meddata.steps.perplexity",
    "deidentify": "meddata.steps.deidentify",
    "dedup": "meddata.steps.dedup",
    "decontam": "meddata.steps.decontam",
    "retrieve": "meddata.steps.retrieve",
}


class SettingsError(ValueError):
    """Settings that cannot be used: an unknown key, a wrong type, a value out of range."""


def setting(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002  (click's word)
    """A settings field: its default and the help text shown by --help and the docs."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class Settings:
    """Base class of a step's typed settings."""

    def check(self) -> None:
        """Raise SettingsError for a value out of range (fields are typed already)."""

    @classmethod
    def parse(cls, data: dict[str, Any] | None, where: str) -> Settings:
        """Settings from a mapping (a recipe's or a steps file's), checked."""
        settings = build(cls, data or {}, where)
        try:
            settings.check()
        except SettingsError as e:
            raise SettingsError(f"{where}: {e}") from None
        return settings

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(name, default, help) of each field, for --help and the docs."""
        out = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
                else f.default
            out.append((f.name, repr(default) if default is not None else "none",
                        f.metadata.get("help", "")))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- typed parsing ------------------------------------------------------------------------------
def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` as type `tp` (dataclasses, lists, dicts, unions with None, scalars), or a
    SettingsError that names `where`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # e.g. float | str: the first that takes the value
            for a in inner:
                try:
                    return coerce(value, a, where)
                except SettingsError:
                    continue
        return coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, where)
    if origin is list:
        if isinstance(value, str) and args and args[0] is str:
            value = [value]
        if not isinstance(value, list):
            raise SettingsError(f"{where}: expected a list, got {type(value).__name__}")
        return [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args \
            else value
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a mapping, got {type(value).__name__}")
        if len(args) == 2:
            return {coerce(k, args[0], f"{where}") : coerce(v, args[1], f"{where}.{k}")
                    for k, v in value.items()}
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SettingsError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


def build(cls: Any, data: dict[str, Any], where: str) -> Any:
    """An instance of dataclass `cls` from `data`, each value coerced to its field's type;
    an unknown key is an error that names it, suggests the closest, and lists the rest."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            raise SettingsError(f"{where}: unknown key {key!r}{_did_you_mean(key, names)}; "
                                f"allowed: {', '.join(names) or 'none'}")
    return cls(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


# ---- the registry ---------------------------------------------------------------------------------
_STEPS: dict[str, type] = {}


def register(step_class: type) -> type:
    """Add a named step class (it sets `name` and `settings_class`); usable as a decorator."""
    if not step_class.name or step_class.settings_class is None:
        raise TypeError(f"{step_class.__name__}: a named step sets `name` and `settings_class`")
    _STEPS[step_class.name] = step_class
    return step_class


def unregister(name: str) -> None:
    _STEPS.pop(name, None)


def names() -> list[str]:
    """Every named step, in the order the pipeline runs them (curation first)."""
    order = list(MODULES)
    return order + sorted(n for n in _STEPS if n not in MODULES)


def get(name: str) -> type:
    """The step class called `name` (its module imported on first use)."""
    if name not in _STEPS:
        if name not in MODULES:
            raise SettingsError(f"unknown step {name!r}{_did_you_mean(name, names())}; "
                                f"steps: {', '.join(names())}")
        register(importlib.import_module(MODULES[name]).STEP)
    return _STEPS[name]


@dataclass
class Context:
    """What a named step may use when it is built: the store (to resolve the versions its
    settings name), the recipe's seed, the tokenizer measure (meddata.length.Measure, or
    None) and whether progress bars are on."""

    store: Any
    seed: int = 0
    measure: Any = None
    progress: bool = False


@dataclass
class StepSpec:
    """One entry of a step list: a step's name and its parsed settings."""

    name: str
    settings: Settings

    def to_dict(self) -> dict[str, Any]:
        return {self.name: self.settings.to_dict()}

    def make(self, context: Context):
        return get(self.name).from_settings(self.settings, context)


def parse_list(entries: Any, where: str) -> list[StepSpec]:
    """A step list (`[{name: {settings}}, ...]`; a bare name means the defaults), each
    entry's settings checked against its step's settings class."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise SettingsError(f"{where}: expected a list of steps such as [{{normalize: {{}}}}, "
                            f"{{quality: {{}}}}], got {type(entries).__name__}")
    out = []
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise SettingsError(f"{here}: each step is one `name: {{settings}}` mapping")
        (name, data), = entry.items()
        step = get(str(name))
        if data is not None and not isinstance(data, dict):
            raise SettingsError(f"{here}.{name}: settings must be a mapping, got "
                                f"{type(data).__name__}")
        out.append(StepSpec(step.name, step.settings_class.parse(data, f"{here}.{name}")))
    return out


def help_text(name: str) -> str:
    """A step's one-line summary and settings, as --help and the docs show them."""
    step = get(name)
    first = (step.__doc__ or "").strip().split("\n\n")[0]
    doc = " ".join(first.split())
    lines = [f"{name}: {doc}"]
    for field_name, default, text in step.settings_class.describe():
        lines.append(f"    {field_name} (default {default}): {text}")
    return "\n".join(lines)
