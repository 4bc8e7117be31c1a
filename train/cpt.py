"""Continued pretraining on a `pretrain` version: plain `text`, packed with TRL's
`bfd_split` strategy by default so long documents are split rather than cut (the version's
own `input_ids` are used instead when it was packed at build time), LoRA on top.

    meddata train cpt --data pretrain/examples@latest --model PATH_OR_ID
"""

from __future__ import annotations

from .common import common_args, lora_config, start, train_and_save


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import SFTConfig, SFTTrainer

    job = start("cpt", store, data_ref, model_name, config)
    packed_at_build = "input_ids" in job.train.column_names
    keep = ["input_ids"] if packed_at_build else ["text"]
    job.train = job.train.select_columns(keep)
    if job.evaluation is not None:
        job.evaluation = job.evaluation.select_columns(keep)
    packing = not packed_at_build if config.packing is None else config.packing
    args = SFTConfig(**common_args(config, job.out, job.evaluation is not None),
                     max_length=config.max_length, packing=packing,
                     packing_strategy=config.packing_strategy or "bfd_split",
                     dataset_text_field="text")
    trainer = SFTTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(config))
    return train_and_save(trainer, "cpt", config, job, args)
