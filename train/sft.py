"""Supervised fine-tuning on an `sft` version (conversational `messages`), LoRA on top.

    meddata train sft --data sft/examples@latest --model PATH_OR_ID [--config sft.yaml]
"""

from __future__ import annotations

from .common import common_args, lora_config, start, train_and_save


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import SFTConfig, SFTTrainer

    job = start("sft", store, data_ref, model_name, config, ["messages"])
    args = SFTConfig(**common_args(config, job.out, job.evaluation is not None),
                     max_length=config.max_length, packing=bool(config.packing),
                     packing_strategy=config.packing_strategy or "bfd")
    trainer = SFTTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(config))
    return train_and_save(trainer, "sft", config, job, args)
