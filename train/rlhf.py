"""Online RL against a learned reward model: the seeds' "reward model, then PPO" stage.

TRL 1.x has no PPOTrainer (it left the stable API, and trl.experimental.ppo is gone since
1.13), so this stage is what TRL offers for the same job: RLOOTrainer (default,
`algorithm: rloo`) or GRPOTrainer (`algorithm: grpo`) on a `prompts` version, with the
reward stage's model passed as the reward function and a KL penalty to the reference
(`beta`, 0.05 by default, must be above 0). No PPO is written by hand and no old TRL is
pinned.

    meddata train rlhf --data prompts/examples@latest --model runs/sft-examples \\
        --set reward_model=runs/reward-examples
"""

from __future__ import annotations

from .common import (
    TrainError,
    common_args,
    load_model,
    load_tokenizer,
    locate,
    lora_config,
    start,
    train_and_save,
)


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    algorithm = config.algorithm or "rloo"
    if algorithm not in ("rloo", "grpo"):
        raise TrainError(f"rlhf algorithm {algorithm!r}: use rloo or grpo")
    if not config.reward_model:
        raise TrainError("rlhf needs reward_model: the output folder of `meddata train "
                         "reward` (or a sequence-classification model folder)")
    beta = 0.05 if config.beta is None else config.beta
    if beta <= 0:
        raise TrainError("rlhf keeps a KL penalty to the reference model: beta must be > 0")
    job = start("rlhf", store, data_ref, model_name, config)
    rm_base = locate(config.reward_model, config)
    reward_model = load_model(rm_base, config, head="seq_cls")
    args = common_args(config, job.out, job.evaluation is not None)
    args.update(num_generations=config.num_generations,
                max_completion_length=config.max_completion_length,
                temperature=config.temperature, beta=beta)
    cls_args, cls_trainer = (RLOOConfig, RLOOTrainer) if algorithm == "rloo" else (
        GRPOConfig, GRPOTrainer)
    trl_args = cls_args(**args)
    trainer = cls_trainer(model=job.model, reward_funcs=reward_model, args=trl_args,
                          train_dataset=job.train, eval_dataset=job.evaluation,
                          processing_class=job.tokenizer,
                          reward_processing_classes=load_tokenizer(rm_base),
                          peft_config=lora_config(config))
    return train_and_save(trainer, "rlhf", config, job, trl_args, extra={"algorithm": algorithm,
                                 "reward_model": {"name": config.reward_model,
                                                  "parent": rm_base.parent}})
