"""Continued pretraining on a `pretrain` version: plain `text`, packed with TRL's
`bfd_split` strategy by default so long documents are split rather than cut (the version's
own `input_ids` are used instead when it was packed at build time), LoRA on top.

    meddata train cpt --data pretrain/examples@latest --model PATH_OR_ID
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

    train, evaluation, version = load_data(store, data_ref, "cpt")
    packed_at_build = "input_ids" in train.column_names
    keep = ["input_ids"] if packed_at_build else ["text"]
    train = train.select_columns(keep)
    evaluation = evaluation.select_columns(keep) if evaluation is not None else None
    base = locate(model_name, config)
    tokenizer = load_tokenizer(base)
    model = load_model(base, config)
    out = output_dir(config, "cpt", version)
    packing = not packed_at_build if config.packing is None else config.packing
    args = SFTConfig(**common_args(config, out, evaluation is not None),
                     max_length=config.max_length, packing=packing,
                     packing_strategy=config.packing_strategy or "bfd_split",
                     dataset_text_field="text")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=lora_config(config))
    return train_and_save(trainer, "cpt", config, out, base, [version], args, tokenizer)
