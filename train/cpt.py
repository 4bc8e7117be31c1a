"""Continued pretraining on a `pretrain` version: plain `text`, packed with TRL's
`bfd_split` strategy by default so long documents are split rather than cut (the version's
own `input_ids` are used instead when it was packed at build time), LoRA on top.

    meddata train cpt --data pretrain/examples@latest --model PATH_OR_ID [--config cpt]
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import check_trl, lora_config, start, train_and_save, trl_config
from .settings import Common, Loaded, setting

# what the trainer does with rows over max_length (TRL 1.16), for the length warning
OVER_MAX_LENGTH = "SFTTrainer cuts them (bfd_split packing splits long documents instead)"
DATA_KIND = "pretrain"  # the output kind this stage trains on


@dataclass
class Settings(Common):
    max_length: int = setting(1024, "tokens per packed sequence")
    packing: bool | None = setting(None, "pack documents (default: on, unless the version "
                                         "was packed at build time)")
    packing_strategy: str = setting("bfd_split", "TRL packing strategy; bfd_split splits long "
                                                 "documents instead of cutting them")


def run(store, data_ref: str, model_name: str, loaded: Loaded) -> dict:
    from trl import SFTConfig, SFTTrainer

    check_trl(SFTConfig, loaded)
    s = loaded.settings
    job = start("cpt", store, data_ref, model_name, loaded, max_length=s.max_length)
    packed_at_build = "input_ids" in job.train.column_names
    keep = ["input_ids"] if packed_at_build else ["text"]
    job.train = job.train.select_columns(keep)
    if job.evaluation is not None:
        job.evaluation = job.evaluation.select_columns(keep)
    packing = not packed_at_build if s.packing is None else s.packing
    args, set_by = trl_config(SFTConfig, loaded, job.out, job.evaluation is not None,
                              max_length=s.max_length, packing=packing,
                              packing_strategy=s.packing_strategy, dataset_text_field="text")
    trainer = SFTTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(s))
    return train_and_save(trainer, job, args, set_by)
