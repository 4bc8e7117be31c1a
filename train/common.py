"""What every training stage shares: data by reference, model and tokenizer loading
(aliases, stage outputs, LoRA, 4-bit QLoRA), the TRL config built from the stage's
settings, the length check before training, and the outputs (adapter, optional merged
checkpoint, training_manifest.json, model card).

A stage output folder looks like:

    <output>/adapter/                 the LoRA adapter and the tokenizer
    <output>/merged/                  the base with the adapter merged (merge: true)
    <output>/checkpoints/             trainer checkpoints (resume: true continues from them)
    <output>/training_manifest.json   data versions, base model, parent stage, every
                                      setting (and where it came from), every TRL argument
                                      (and who set it), library versions, final metrics
    <output>/README.md                model card naming the data versions
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from meddata.models import resolve_model
from meddata.secrets import redact
from meddata.store import Store, Version

from .settings import Common, Loaded, TrainError


# ---- data --------------------------------------------------------------------------------------
def data_version(store: Store, ref: str, stage: str) -> Version:
    """The version a stage trains on, checked to be of the stage's kind (no rows read)."""
    from meddata.train import module

    version = store.resolve(ref)
    want = module(stage).DATA_KIND
    if version.kind != want:
        raise TrainError(f"stage {stage} trains on {want} versions; {version.ref} is "
                         f"{version.kind}")
    return version


def load_data(store: Store, ref: str, stage: str, columns: list[str] | None = None):
    """(train, eval or None, version) for a stage, checking the version's kind."""
    version = data_version(store, ref, stage)
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


def locate(model: str, config: Common) -> BaseModel:
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


def quantization_config(config: Common):
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


def load_model(base: BaseModel, config: Common, head: str = "causal_lm"):
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


def lora_config(config: Common, task_type: str = "CAUSAL_LM"):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type=task_type)


def check_trl(config_cls, loaded: Loaded) -> None:
    """Every `trl:` field must be a field of the stage's TRL config (checked before anything
    loads, so a typo costs nothing), and not one of the stage's own settings."""
    import difflib

    fields = {f.name for f in dataclasses.fields(config_cls)}
    settings_names = {f.name for f in dataclasses.fields(type(loaded.settings))}
    for key in loaded.trl:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=3)
            raise TrainError(f"trl.{key} is not a field of {config_cls.__name__}"
                             + (f" (did you mean {', '.join(close)}?)" if close else ""))
        if key in settings_names:
            raise TrainError(f"trl.{key}: {key} is a meddata setting of this stage; set it as "
                             f"`{key}` (`--set {key}=...`), not under trl")


def trl_config(config_cls, loaded: Loaded, out: Path, has_eval: bool,
               **stage_args: Any):
    """The stage's TRL config: meddata's values (from the settings, and what suits this
    machine: bf16 where supported, CPU handling, checkpointing), then the user's `trl:`
    fields, each checked against the real dataclass. Returns (config, who set what)."""
    s = loaded.settings
    info = device_info()
    fields = {f.name for f in dataclasses.fields(config_cls)}
    checkpointing = s.gradient_checkpointing if s.gradient_checkpointing is not None \
        else info["cuda"]
    ours = {
        "output_dir": str(out / "checkpoints"),
        "max_steps": s.max_steps, "num_train_epochs": s.num_train_epochs,
        "learning_rate": s.learning_rate,
        "per_device_train_batch_size": s.per_device_train_batch_size,
        "per_device_eval_batch_size": s.per_device_eval_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "warmup_steps": s.warmup_steps, "lr_scheduler_type": s.lr_scheduler_type,
        "logging_steps": s.logging_steps, "save_steps": s.save_steps, "seed": s.seed,
        "bf16": info["bf16"], "use_cpu": not info["cuda"], "report_to": [],
        "save_total_limit": 2,
        # transformers 5 renamed gradient_checkpointing (the old name warns)
        ("activation_checkpointing" if "activation_checkpointing" in fields
         else "gradient_checkpointing"): checkpointing,
        **stage_args,
    }
    from meddata.progress import interactive

    if not interactive() or os.environ.get("TQDM_DISABLE") == "1":
        # stderr is a log file or a pipe (bars would write \r and [A escapes into it), or
        # --quiet: the trainer prints its logs as lines instead
        ours["disable_tqdm"] = True
    if has_eval:
        ours["eval_strategy"] = "steps"
        ours["eval_steps"] = s.eval_steps or s.save_steps
    check_trl(config_cls, loaded)
    set_by = {k: "meddata" for k in ours} | {k: "user" for k in loaded.trl}
    return config_cls(**{**ours, **loaded.trl}), set_by


def output_dir(config: Common, stage: str, version: Version) -> Path:
    return Path(config.output_dir or f"runs/{stage}-{version.name}")


@dataclass
class Run:
    """What a stage starts from: its data, its model and tokenizer, and where it writes."""

    stage: str
    loaded: Loaded
    train: Any
    evaluation: Any
    version: Version
    base: BaseModel
    tokenizer: Any
    model: Any
    out: Path
    lengths: dict[str, Any]

    @property
    def settings(self):
        return self.loaded.settings


def quiet_known_warnings() -> None:
    """Warnings a user cannot act on: transformers 5's renamed checkpointing flag (raised
    inside TRL and peft); peft's note, on saving an adapter of a local model, that it
    assumes the vocabulary unchanged (LoRA never changes it); bitsandbytes' note, on
    import, that an optional CPU 4-bit kernel package is missing (meddata quantizes only
    on CUDA)."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"Could not find a config file in .* will "
                            r"assume that the vocabulary was not modified", category=UserWarning)
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated.*",
                            category=FutureWarning)


def start(stage: str, store: Store, data_ref: str, model_name: str, loaded: Loaded,
          columns: list[str] | None = None, head: str = "causal_lm",
          max_length: int | None = None) -> Run:
    """Load the stage's data version (checking its kind), then the model and tokenizer, and
    say before training how many rows are longer than the trainer's max_length."""
    quiet_known_warnings()
    train, evaluation, version = load_data(store, data_ref, stage, columns)
    base = locate(model_name, loaded.settings)
    tokenizer = load_tokenizer(base)
    lengths = length_check(version, tokenizer, stage, max_length)
    return Run(stage, loaded, train, evaluation, version, base, tokenizer,
               load_model(base, loaded.settings, head=head),
               output_dir(loaded.settings, stage, version), lengths)


def length_check(version: Version, tokenizer, stage: str, max_length: int | None
                 ) -> dict[str, Any]:
    """How many training rows of the version the trainer will cut or drop at `max_length` tokens,
    measured with this model's tokenizer (its chat template) the way the kind measures a
    row. Printed before training and kept in the manifest."""
    import sys

    import numpy as np

    from meddata.builders import registry
    from meddata.length import Measure

    if not max_length:
        return {}
    kind = registry.get(version.kind)
    measure = Measure.with_tokenizer(tokenizer)
    over, total, longest = 0, 0, 0
    split = "train" if "train" in version.splits else None  # (the rows the trainer reads)
    for batch in version.iter_batches(split=split, verify="none"):
        if kind.name == "pretrain" and "input_ids" in batch.schema.names:
            import pyarrow.compute as pc

            n = pc.list_value_length(batch.column("input_ids")).to_numpy(zero_copy_only=False)
        else:
            n = np.asarray(kind.length(batch, measure))
        over += int((n > max_length).sum())
        total += len(n)
        longest = max(longest, int(n.max()) if len(n) else 0)
    built = version.manifest.get("stats", {}).get("tokenizer") or {}
    result = {"max_length": max_length, "rows": total, "over_max_length": over,
              "longest": longest, "measured_with": "this model's tokenizer",
              "built_with_tokenizer": built.get("tokenizer"),
              "built_max_tokens": next((s.get("max_tokens") for s in version.manifest["stages"]
                                        if s["stage"] == "length"), None)}
    if over:
        from meddata.train import module

        what = getattr(module(stage), "OVER_MAX_LENGTH", "truncates them")
        print(f"warning: {over} of {total} rows of {version.ref} are longer than max_length="
              f"{max_length} tokens with this model's tokenizer (longest {longest}); "
              f"{what}. Build with --max-tokens {max_length} --tokenizer <this model's "
              f"tokenizer> to bound them in the data, with a reason for each.",
              file=sys.stderr)
    return result


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


def final_evaluation(trainer) -> dict[str, float]:
    """The validation metrics at the last step: the trainer's own evaluation when it ran
    one there (transformers evaluates at the end of training under eval_strategy "steps"),
    else one evaluation now. The validation split is evaluated once, never twice."""
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if entry.get("step") == step and any(k.startswith("eval_") for k in entry):
            return {k: v for k, v in entry.items() if k.startswith("eval_")}
    return trainer.evaluate()


def lineage(manifest: dict[str, Any], folder: Path | str) -> list[dict[str, Any]]:
    """The stages behind a checkpoint, first to last: {stage, data (version refs), folder}.
    Read from the manifest (`lineage`), or, for manifests written before it was recorded,
    by following `parent_stage` folders while they exist."""
    if manifest.get("lineage"):
        return manifest["lineage"]
    chain: list[dict[str, Any]] = []
    parent = manifest.get("parent_stage")
    if parent:
        path = Path(parent["folder"]) / "training_manifest.json"
        chain = lineage(json.loads(path.read_text(encoding="utf-8")), parent["folder"]) \
            if path.exists() else [{"stage": parent["stage"], "data": parent["data"],
                                    "folder": parent["folder"]}]
    return chain + [{"stage": manifest["stage"], "data": [d["ref"] for d in manifest["data"]],
                     "folder": str(folder)}]


def train_and_save(trainer, job: Run, trl_args, set_by: dict[str, str],
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (resuming when asked), save the adapter (and merged model), write the manifest
    and the model card. Returns the manifest."""
    settings = job.settings
    output, base, tokenizer, data = job.out, job.base, job.tokenizer, [job.version]
    ckpts = sorted((output / "checkpoints").glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if settings.resume and ckpts else None)
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None:
        metrics.update(final_evaluation(trainer))
    adapter = output / "adapter"
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    if settings.merge:
        model = trainer.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(str(output / "merged"))
        tokenizer.save_pretrained(str(output / "merged"))
    manifest = {
        "stage": job.stage,
        "created_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": [data_record(v) for v in data],
        "base_model": {"name": base.name, "path": base.path,
                       "revision": base.kwargs.get("revision"),
                       "gguf_file": base.kwargs.get("gguf_file")},
        "parent_stage": base.parent,
        "settings": dataclasses.asdict(settings),
        "settings_origin": job.loaded.origin,   # default | config | command line
        "trl": job.loaded.trl,                  # the user's trl: fields
        "trl_args": json.loads(trl_args.to_json_string()),
        "trl_args_set_by": set_by,              # meddata | user; the rest: TRL's defaults
        "lengths": job.lengths,
        "libraries": versions_of_libraries(),
        "device": device_info(),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "global_step": trainer.state.global_step,
        "outputs": {"adapter": str(adapter),
                    "merged": str(output / "merged") if settings.merge else None},
        **(extra or {}),
    }
    manifest["lineage"] = lineage(manifest, output)
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
