"""A reward model on a `preference` version: a sequence-classification head with one
output, trained on chosen versus rejected (TRL RewardTrainer), LoRA on top. Its output
folder is what the `rlhf` stage takes as `reward_model`.

    meddata train reward --data preference/examples@latest --model runs/sft-examples
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
    from trl import RewardConfig, RewardTrainer

    cols = ["prompt", "chosen", "rejected"]
    train, evaluation, version = load_data(store, data_ref, "reward", cols)
    base = locate(model_name, config)
    tokenizer = load_tokenizer(base)
    model = load_model(base, config, head="seq_cls")
    out = output_dir(config, "reward", version)
    args = RewardConfig(**common_args(config, out, evaluation is not None),
                        max_length=config.max_length)
    trainer = RewardTrainer(model=model, args=args, train_dataset=train,
                            eval_dataset=evaluation, processing_class=tokenizer,
                            peft_config=lora_config(config, task_type="SEQ_CLS"))
    return train_and_save(trainer, "reward", config, out, base, [version], args, tokenizer,
                          extra={"head": "seq_cls"})
