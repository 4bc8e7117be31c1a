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

from dataclasses import dataclass

from .common import (
    check_trl,
    load_model,
    load_tokenizer,
    locate,
    lora_config,
    start,
    train_and_save,
    trl_config,
)
from .settings import Common, Loaded, TrainError, setting

DATA_KIND = "prompts"  # the output kind this stage trains on


@dataclass
class Settings(Common):
    reward_model: str | None = setting(None, "the reward stage's output folder (or a "
                                             "sequence-classification model folder)")
    algorithm: str = setting("rloo", "rloo, or grpo")
    learning_rate: float = setting(1e-5, "peak learning rate")
    beta: float = setting(0.05, "KL strength to the reference model (must be > 0)")
    num_generations: int = setting(4, "completions sampled per prompt")
    max_completion_length: int = setting(128, "tokens per completion")
    temperature: float = setting(1.0, "sampling temperature")

    def check(self, stage: str) -> None:
        super().check(stage)
        if self.algorithm not in ("rloo", "grpo"):
            raise TrainError(f"rlhf algorithm {self.algorithm!r}: use rloo or grpo")
        if self.beta <= 0:
            raise TrainError("rlhf keeps a KL penalty to the reference model: beta must be > 0")


def run(store, data_ref: str, model_name: str, loaded: Loaded) -> dict:
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    s = loaded.settings
    check_trl(RLOOConfig if s.algorithm == "rloo" else GRPOConfig, loaded)
    if not s.reward_model:
        raise TrainError("rlhf needs reward_model: the output folder of `meddata train "
                         "reward` (or a sequence-classification model folder)")
    job = start("rlhf", store, data_ref, model_name, loaded)
    rm_base = locate(s.reward_model, s)
    reward_model = load_model(rm_base, s, head="seq_cls")
    config_cls, trainer_cls = (RLOOConfig, RLOOTrainer) if s.algorithm == "rloo" else (
        GRPOConfig, GRPOTrainer)
    args, set_by = trl_config(config_cls, loaded, job.out, job.evaluation is not None,
                              num_generations=s.num_generations,
                              max_completion_length=s.max_completion_length,
                              temperature=s.temperature, beta=s.beta)
    trainer = trainer_cls(model=job.model, reward_funcs=reward_model, args=args,
                          train_dataset=job.train, eval_dataset=job.evaluation,
                          processing_class=job.tokenizer,
                          reward_processing_classes=load_tokenizer(rm_base),
                          peft_config=lora_config(s))
    return train_and_save(trainer, job, args, set_by, extra={
        "algorithm": s.algorithm,
        "reward_model": {"name": s.reward_model, "parent": rm_base.parent}})
