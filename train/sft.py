"""Supervised fine-tuning on an `sft` version (conversational `messages`), LoRA on top.

    meddata train sft --data sft/examples@latest --model PATH_OR_ID [--config sft]
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import check_trl, lora_config, start, train_and_save, trl_config
from .settings import Common, Loaded, setting

# what the trainer does with rows over max_length (TRL 1.16), for the length warning
OVER_MAX_LENGTH = "SFTTrainer truncates them (and drops rows left without trainable tokens)"
DATA_KIND = "sft"  # the output kind this stage trains on


@dataclass
class Settings(Common):
    max_length: int = setting(1024, "tokens per conversation; longer rows are truncated")
    packing: bool = setting(False, "pack conversations into max_length sequences")
    packing_strategy: str = setting("bfd", "TRL packing strategy (bfd, bfd_split, wrapped)")


def run(store, data_ref: str, model_name: str, loaded: Loaded) -> dict:
    from trl import SFTConfig, SFTTrainer

    check_trl(SFTConfig, loaded)
    s = loaded.settings
    job = start("sft", store, data_ref, model_name, loaded, ["messages"],
                max_length=s.max_length)
    args, set_by = trl_config(SFTConfig, loaded, job.out, job.evaluation is not None,
                              max_length=s.max_length, packing=s.packing,
                              packing_strategy=s.packing_strategy)
    trainer = SFTTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(s))
    return train_and_save(trainer, job, args, set_by)
