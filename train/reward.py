"""A reward model on a `preference` version: a sequence-classification head with one
output, trained on chosen versus rejected (TRL RewardTrainer), LoRA on top. Its output
folder is what the `rlhf` stage takes as `reward_model`.

    meddata train reward --data preference/examples@latest --model runs/sft-examples
"""

from __future__ import annotations

from .common import common_args, lora_config, start, train_and_save


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import RewardConfig, RewardTrainer

    job = start("reward", store, data_ref, model_name, config,
                ["prompt", "chosen", "rejected"], head="seq_cls")
    args = RewardConfig(**common_args(config, job.out, job.evaluation is not None),
                        max_length=config.max_length)
    trainer = RewardTrainer(model=job.model, args=args, train_dataset=job.train,
                            eval_dataset=job.evaluation, processing_class=job.tokenizer,
                            peft_config=lora_config(config, task_type="SEQ_CLS"))
    return train_and_save(trainer, "reward", config, job, args, extra={"head": "seq_cls"})
