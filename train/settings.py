"""Training settings: what every stage shares (`Common`), each stage's own (a `Settings`
dataclass in its module, extending `Common`), and the `trl:` section that reaches every
field of the stage's TRL config.

A key is declared with `setting(default, "one line saying what it does")`; that line is
what `meddata train STAGE --help` and docs/train.md show (a test keeps the docs equal to
the classes). Values come from the dataclass defaults, then a YAML `--config` file, then
`--set key=value` on the command line; the training manifest records which one each
value came from. Unknown keys, and keys of another stage, are errors naming the key and
the stage.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TrainError(Exception):
    """A training run that cannot start: wrong data kind, a bad setting, no CUDA for 4-bit."""


def setting(default: Any, help: str) -> Any:
    """A settings field with its one-line meaning."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Common:
    """Every stage's keys: outputs, schedule, model loading and LoRA."""

    output_dir: str | None = setting(None, "output folder (default runs/<stage>-<data name>)")
    max_steps: int = setting(-1, "stop after this many optimizer steps (> 0 overrides epochs)")
    num_train_epochs: float = setting(1.0, "passes over the training split")
    learning_rate: float = setting(2e-4, "peak learning rate")
    lr_scheduler_type: str = setting("linear", "transformers scheduler: linear, cosine, ...")
    warmup_steps: float = setting(0.0, "warmup steps, or a ratio of all steps when < 1")
    per_device_train_batch_size: int = setting(4, "rows per device and step")
    per_device_eval_batch_size: int = setting(4, "rows per device for evaluation")
    gradient_accumulation_steps: int = setting(1, "steps accumulated per optimizer step")
    logging_steps: int = setting(10, "log every N steps")
    save_steps: int = setting(500, "checkpoint every N steps")
    eval_steps: int | None = setting(None, "evaluate on the validation split every N steps "
                                           "(default: save_steps)")
    seed: int = setting(42, "random seed")
    gradient_checkpointing: bool | None = setting(None, "activation checkpointing (default: "
                                                        "on with CUDA, off on CPU)")
    resume: bool = setting(False, "continue from the last checkpoint in <output>/checkpoints")
    merge: bool = setting(False, "also save the base model with the adapter merged")
    revision: str | None = setting(None, "model revision (hub models)")
    trust_remote_code: bool = setting(False, "allow a model's own code (hub models)")
    quantization: str = setting("none", "none, or 4bit (QLoRA through bitsandbytes; CUDA)")
    lora: bool = setting(True, "train a LoRA adapter (false: every weight)")
    lora_r: int = setting(16, "LoRA rank")
    lora_alpha: int = setting(32, "LoRA alpha")
    lora_dropout: float = setting(0.05, "LoRA dropout")
    lora_target_modules: list[str] | str = setting("all-linear", "modules LoRA adapts "
                                                                 "(all-linear, or names)")

    def check(self, stage: str) -> None:
        if self.quantization not in ("none", "4bit"):
            raise TrainError(f"{stage}: quantization {self.quantization!r}: use none or 4bit")


@dataclass
class Loaded:
    """Settings as loaded: the values, the TRL section, and where each value came from."""

    settings: Common
    trl: dict[str, Any]
    origin: dict[str, str]         # key -> default | config | command line


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """`key=value` pairs with YAML values (`max_steps=2`, `rewards=[mcq_exact]`,
    `trl.weight_decay=0.01`)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainError(f"--set {item!r}: expected key=value")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def _coerce(name: str, value: Any, tp: Any, stage: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for inner in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, inner, stage)
            except TrainError as e:
                errors.append(str(e))
        raise TrainError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise TrainError(f"{stage}: {name} expects a list, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise TrainError(f"{stage}: {name} expects a mapping, got {value!r}")
        return value
    if tp is bool and not isinstance(value, bool):
        raise TrainError(f"{stage}: {name} expects true or false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TrainError(f"{stage}: {name} expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainError(f"{stage}: {name} expects a number, got {value!r}")
        return float(value)
    if tp is str and not isinstance(value, str):
        raise TrainError(f"{stage}: {name} expects text, got {value!r}")
    return value


def config_path(name: str) -> Path:
    """A config file: a path, or the name of one of train/configs/ (`sft`, `gspo`, ...)."""
    path = Path(name)
    if path.exists():
        return path
    packaged = Path(__file__).parent / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    if packaged.exists():
        return packaged
    known = sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.yaml"))
    raise TrainError(f"config {name}: no such file, and not one of the bundled configs "
                     f"({', '.join(known)})")


def load(cls: type[Common], stage: str, path: str | None, overrides: dict[str, Any],
         all_stages: dict[str, type[Common]] | None = None) -> Loaded:
    """The stage's settings from defaults, a YAML file and command-line overrides."""
    import yaml

    from_file: dict[str, Any] = {}
    if path:
        try:
            from_file = yaml.safe_load(config_path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise TrainError(f"config {path}: not valid YAML: {e}") from None
        if not isinstance(from_file, dict):
            raise TrainError(f"config {path}: expected a mapping of settings")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    trl: dict[str, Any] = {}
    values: dict[str, Any] = {}
    origin = {n: "default" for n in names}
    for where, data in (("config", from_file), ("command line", overrides)):
        for key, value in data.items():
            if key == "trl":
                if not isinstance(value, dict):
                    raise TrainError(f"{stage}: `trl` must be a mapping of TRL config fields")
                trl.update(value)
                continue
            if key.startswith("trl."):
                trl[key[4:]] = value
                continue
            if key not in names:
                owners = [s for s, c in (all_stages or {}).items()
                          if key in {f.name for f in dataclasses.fields(c)}]
                hint = f" (it is a setting of {', '.join(owners)})" if owners else ""
                raise TrainError(f"unknown setting {key!r} for stage {stage}{hint}; its "
                                 f"settings: `meddata train {stage} --help`; any field of "
                                 f"its TRL config goes under `trl:`")
            values[key] = _coerce(key, value, hints[key], stage)
            origin[key] = where
    settings = cls(**values)
    settings.check(stage)
    return Loaded(settings, trl, origin)


def describe(cls: type[Common]) -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every setting of a stage."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append((f.name, repr(default) if isinstance(default, str) else str(default),
                    f.metadata.get("help", "")))
    return out


def own_keys(cls: type[Common]) -> list[str]:
    """The keys a stage adds to the common ones."""
    common = {f.name for f in dataclasses.fields(Common)}
    return [f.name for f in dataclasses.fields(cls) if f.name not in common]


def markdown(stages: dict[str, type[Common]]) -> str:
    """The settings tables of docs/train.md: the common keys, then each stage's own."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {h} |" for k, d, h in describe(Common)]
    for stage, cls in stages.items():
        own = own_keys(cls)
        if not own:
            continue
        lines += ["", f"`{stage}`:", "", "| key | default | meaning |", "|---|---|---|"]
        lines += [f"| `{k}` | `{d}` | {h} |" for k, d, h in describe(cls) if k in own]
    return "\n".join(lines)
