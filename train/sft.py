"""Supervised fine-tuning on an `sft` version (conversational `messages`), LoRA on top.

    meddata train sft --data sft/examples@latest --model PATH_OR_ID [--config sft.yaml]
"""

from __future__ import annotations

from .common import (
    common_args,
    load_data,
    load_model,
    load_tokenizer,
    locate,
    lora_config,
    output_dir,
    train_and_save,
)


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import SFTConfig, SFTTrainer

    train, evaluation, version = load_data(store, data_ref, "sft", ["messages"])
    base = locate(model_name, config)
    tokenizer = load_tokenizer(base)
    model = load_model(base, config)
    out = output_dir(config, "sft", version)
    args = SFTConfig(**common_args(config, out, evaluation is not None),
                     max_length=config.max_length, packing=bool(config.packing),
                     packing_strategy=config.packing_strategy or "bfd")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=lora_config(config))
    return train_and_save(trainer, "sft", config, out, base, [version], args, tokenizer)
