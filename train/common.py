"""What every training stage shares: the config, data by reference, model and tokenizer
loading (aliases, stage outputs, LoRA, 4-bit QLoRA), TRL arguments, and the outputs
(adapter, optional merged checkpoint, training_manifest.json, model card).

A stage output folder looks like:

    <output>/adapter/                 the LoRA adapter and the tokenizer
    <output>/merged/                  the base with the adapter merged (merge: true)
    <output>/checkpoints/             trainer checkpoints (resume: true continues from them)
    <output>/training_manifest.json   data versions, base model, parent stage, every
                                      hyperparameter, library versions, final metrics
    <output>/README.md                model card naming the data versions
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from meddata.models import resolve_model
from meddata.secrets import redact
from meddata.store import Store, Version


class TrainError(Exception):
    """A training run that cannot start: wrong data kind, missing CUDA for 4-bit, ..."""


@dataclass
class TrainConfig:
    # outputs and schedule
    output_dir: str | None = None          # default: runs/<stage>-<data name>
    max_steps: int = -1                     # > 0 overrides epochs
    num_train_epochs: float = 1.0
    learning_rate: float = 2e-4
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0               # steps, or a ratio of all steps when < 1
    lr_scheduler_type: str = "linear"
    logging_steps: int = 10
    save_steps: int = 500
    eval_steps: int | None = None           # evaluate on the version's validation split
    seed: int = 42
    max_length: int = 1024
    gradient_checkpointing: bool | None = None  # default: on with CUDA, off on CPU
    resume: bool = False                    # continue from the last checkpoint
    merge: bool = False                     # also save the merged full model
    # model
    revision: str | None = None
    trust_remote_code: bool = False
    quantization: str = "none"              # none | 4bit (QLoRA, needs CUDA)
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    # sft / cpt
    packing: bool | None = None             # default: on for cpt, off for sft
    packing_strategy: str | None = None     # default: bfd for sft, bfd_split for cpt
    # dpo / kto / rlhf / grpo
    beta: float | None = None               # default: TRL's for the stage
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    # grpo / rlhf
    algorithm: str | None = None            # grpo: grpo (default) | gspo; rlhf: rloo | grpo
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    loss_type: str | None = None
    importance_sampling_level: str | None = None
    epsilon: float | None = None
    epsilon_high: float | None = None
    steps_per_generation: int | None = None
    rewards: list[str] = field(default_factory=lambda: ["mcq_exact", "think_format"])
    reward_weights: list[float] | None = None
    judge: dict[str, Any] = field(default_factory=dict)  # see train/judge.py
    reward_model: str | None = None         # rlhf: a reward stage output or model folder

    @classmethod
    def load(cls, path: str | None, overrides: dict[str, Any]) -> TrainConfig:
        import yaml

        data: dict[str, Any] = {}
        if path:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        data.update(overrides)
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in names]
        if unknown:
            raise TrainError(f"unknown config key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(names)}")
        return cls(**data)


def parse_overrides(items: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs with YAML values (`max_steps=2`, `rewards=[mcq_exact]`)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainError(f"--set {item!r}: expected key=value")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


# ---- data --------------------------------------------------------------------------------------
def load_data(store: Store, ref: str, stage: str, columns: list[str] | None = None):
    """(train, eval or None, version) for a stage, checking the version's kind."""
    from meddata.builders.registry import kind_for_stage

    version = store.resolve(ref)
    want = kind_for_stage(stage).name
    if version.kind != want:
        raise TrainError(f"stage {stage} trains on {want} versions; {version.ref} is "
                         f"{version.kind}")
    def pick(split):
        ds = version.to_dataset(split=split)
        return ds.select_columns([c for c in columns if c in ds.column_names]) if columns else ds
    train = pick("train") if "train" in version.splits else pick(None)
    evaluation = pick("validation") if "validation" in version.splits else None
    return train, evaluation, version


def data_record(version: Version) -> dict[str, Any]:
    m = version.manifest
    return {"ref": version.ref, "kind": version.kind, "name": version.name, "id": version.id,
            "content_sha256": m["content_sha256"], "rows": m["rows"],
            "shards": [{"path": s["path"], "sha256": s["sha256"], "rows": s["rows"]}
                       for s in m["shards"]]}


# ---- models -------------------------------------------------------------------------------------
@dataclass
class BaseModel:
    name: str                       # the base model (a chain's first one)
    path: str                       # what from_pretrained loads
    kwargs: dict[str, Any]
    adapter: str | None = None      # a previous stage's adapter to merge first
    parent: dict[str, Any] | None = None


def locate(model: str, config: TrainConfig) -> BaseModel:
    """Resolve --model: an alias, a model folder or hub id, or a meddata stage output."""
    folder = Path(model)
    manifest = folder / "training_manifest.json"
    if manifest.exists():
        parent = json.loads(manifest.read_text(encoding="utf-8"))
        root = parent["base_model"]["name"]  # the chain's original base model
        if (folder / "merged").exists():
            return BaseModel(root, str(folder / "merged"), {}, parent=_parent(parent, folder))
        base = locate(root, config)
        return BaseModel(root, base.path, base.kwargs, adapter=str(folder / "adapter"),
                         parent=_parent(parent, folder))
    source = resolve_model(model)
    return BaseModel(model, source.path, {**source.kwargs, "revision": config.revision,
                                          "trust_remote_code": config.trust_remote_code})


def _parent(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {"folder": str(folder), "stage": manifest["stage"],
            "data": [d["ref"] for d in manifest["data"]],
            "base_model": manifest["base_model"]["name"]}


def device_info() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {"cuda": cuda, "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
            "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"}


def quantization_config(config: TrainConfig):
    if config.quantization == "none":
        return None
    if config.quantization != "4bit":
        raise TrainError(f"quantization {config.quantization!r}: use none or 4bit")
    import torch

    if not torch.cuda.is_available():
        raise TrainError("quantization 4bit (QLoRA) needs a CUDA GPU; this machine has none. "
                         "Use quantization: none to train LoRA in full precision.")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_tokenizer(base: BaseModel):
    from transformers import AutoTokenizer

    path = base.adapter or base.path
    tok = AutoTokenizer.from_pretrained(path, **(base.kwargs if not base.adapter else {}))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(base: BaseModel, config: TrainConfig, head: str = "causal_lm"):
    """The base model (with a previous stage's adapter merged in), ready for a new LoRA."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    info = device_info()
    kwargs = dict(base.kwargs)
    quant = quantization_config(config)
    if quant is not None:
        kwargs["quantization_config"] = quant
    kwargs["dtype"] = torch.bfloat16 if info["bf16"] else torch.float32
    adapter_task = None
    if base.adapter:
        adapter_task = json.loads((Path(base.adapter) / "adapter_config.json").read_text()
                                  ).get("task_type")
    if head == "seq_cls" and adapter_task != "SEQ_CLS":
        # a reward model on top of a causal stage: merge that stage first, then add the head
        import tempfile

        causal = load_model(base, config)
        with tempfile.TemporaryDirectory() as tmp:
            causal.save_pretrained(tmp)
            load_tokenizer(base).save_pretrained(tmp)
            return AutoModelForSequenceClassification.from_pretrained(
                tmp, num_labels=1, dtype=kwargs["dtype"],
                quantization_config=kwargs.get("quantization_config"))
    if head == "seq_cls":
        model = AutoModelForSequenceClassification.from_pretrained(base.path, num_labels=1,
                                                                   **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, **kwargs)
    if base.kwargs.get("gguf_file"):
        # transformers dequantizes GGUF weights to float tensors while loading and keeps only
        # a marker, which would make Trainer refuse to train: nothing here is quantized
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if base.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, base.adapter).merge_and_unload()
    if model.config.pad_token_id is None:
        tok = load_tokenizer(base)
        model.config.pad_token_id = tok.pad_token_id
    return model


def lora_config(config: TrainConfig, task_type: str = "CAUSAL_LM"):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type=task_type)


def common_args(config: TrainConfig, output: Path, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments fields every TRL config shares, set for this machine."""
    info = device_info()
    gc = config.gradient_checkpointing if config.gradient_checkpointing is not None \
        else info["cuda"]
    args = {
        "output_dir": str(output / "checkpoints"),
        "max_steps": config.max_steps, "num_train_epochs": config.num_train_epochs,
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_steps, "lr_scheduler_type": config.lr_scheduler_type,
        "logging_steps": config.logging_steps, "save_steps": config.save_steps,
        "seed": config.seed, "bf16": info["bf16"], "use_cpu": not info["cuda"],
        "gradient_checkpointing": gc, "report_to": [], "save_total_limit": 2,
    }
    if has_eval:
        args["eval_strategy"] = "steps"
        args["eval_steps"] = config.eval_steps or config.save_steps
    return args


def output_dir(config: TrainConfig, stage: str, version: Version) -> Path:
    return Path(config.output_dir or f"runs/{stage}-{version.name}")


@dataclass
class Run:
    """What a stage starts from: its data, its model and tokenizer, and where it writes."""

    train: Any
    evaluation: Any
    version: Version
    base: BaseModel
    tokenizer: Any
    model: Any
    out: Path


def start(stage: str, store: Store, data_ref: str, model_name: str, config: TrainConfig,
          columns: list[str] | None = None, head: str = "causal_lm") -> Run:
    """Load the stage's data version (checking its kind), then the model and tokenizer."""
    train, evaluation, version = load_data(store, data_ref, stage, columns)
    base = locate(model_name, config)
    return Run(train, evaluation, version, base, load_tokenizer(base),
               load_model(base, config, head=head), output_dir(config, stage, version))


# ---- outputs ---------------------------------------------------------------------------------------
def versions_of_libraries() -> dict[str, str]:
    out = {}
    for pkg in ("meddata", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
                "bitsandbytes"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def train_and_save(trainer, stage: str, config: TrainConfig, job: Run, trl_args,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (resuming when asked), save the adapter (and merged model), write the manifest
    and the model card. Returns the manifest."""
    output, base, tokenizer, data = job.out, job.base, job.tokenizer, [job.version]
    ckpts = sorted((output / "checkpoints").glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if config.resume and ckpts else None)
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None:
        metrics.update(trainer.evaluate())
    adapter = output / "adapter"
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    if config.merge:
        model = trainer.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(str(output / "merged"))
        tokenizer.save_pretrained(str(output / "merged"))
    manifest = {
        "stage": stage,
        "created_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": [data_record(v) for v in data],
        "base_model": {"name": base.name, "path": base.path,
                       "revision": base.kwargs.get("revision"),
                       "gguf_file": base.kwargs.get("gguf_file")},
        "parent_stage": base.parent,
        "config": dataclasses.asdict(config),
        "trl_args": json.loads(trl_args.to_json_string()),
        "libraries": versions_of_libraries(),
        "device": device_info(),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "global_step": trainer.state.global_step,
        "outputs": {"adapter": str(adapter),
                    "merged": str(output / "merged") if config.merge else None},
        **(extra or {}),
    }
    manifest = redact(manifest)  # no key or URL credential reaches the disk
    text = json.dumps(manifest, indent=2, ensure_ascii=False, default=str)
    (output / "training_manifest.json").write_text(text, encoding="utf-8")
    card = model_card(manifest)
    (output / "README.md").write_text(card, encoding="utf-8")
    (adapter / "README.md").write_text(card, encoding="utf-8")
    return manifest


def model_card(manifest: dict[str, Any]) -> str:
    import yaml

    header = {"library_name": "peft", "base_model": manifest["base_model"]["name"],
              "tags": ["meddata", manifest["stage"], "trl", "lora"]}
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# meddata {manifest['stage']} adapter", "",
             f"Trained with TRL {manifest['libraries'].get('trl')} on "
             f"{manifest['created_at']}, {manifest['global_step']} optimizer steps.", "",
             "## Data versions", ""]
    for d in manifest["data"]:
        lines.append(f"- `{d['ref']}` ({d['rows']} rows, content sha256 "
                     f"{d['content_sha256'][:16]})")
    if manifest.get("parent_stage"):
        p = manifest["parent_stage"]
        lines += ["", f"Continues the {p['stage']} stage in `{p['folder']}` (data: "
                      f"{', '.join(p['data'])})."]
    lines += ["", "## Final metrics", ""]
    lines += [f"- {k}: {v:.4g}" for k, v in manifest["metrics"].items()]
    lines += ["", "Every hyperparameter is in training_manifest.json.", ""]
    return "\n".join(lines)
