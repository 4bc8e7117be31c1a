"""GRPO and GSPO on a `prompts` version, with rewards computed from its columns.

GSPO is GRPO with sequence-level importance sampling; `algorithm: gspo` sets the values of
the GSPO paper as TRL documents them: importance_sampling_level sequence, loss_type grpo
(TRL warns that dapo or dr_grpo with sequence-level sampling is not the GSPO loss),
beta 0, epsilon 3e-4, epsilon_high 4e-4, steps_per_generation 4 x gradient accumulation.
Any of them can still be set under `trl:`. TRL's loss_type choices: grpo (per-sequence
normalisation, the original), dr_grpo (no length normalisation), dapo (token-level
normalisation over the batch, TRL's default), bnpo, and the others its GRPOConfig lists.

Rewards (setting `rewards`, weighted by `reward_weights`): mcq_exact (the letter, or the
exact set of letters, or yes/no after </think>), think_format (one <think> block, then an
answer), answer_match, and judge (an LLM judge over an OpenAI-compatible endpoint,
setting `judge`).

    meddata train grpo --data prompts/examples@latest --model runs/sft-examples \\
        --set algorithm=gspo --set rewards=[mcq_exact,think_format]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .common import check_trl, lora_config, start, train_and_save, trl_config
from .rewards import reward_functions
from .settings import Common, Loaded, TrainError, setting

GSPO = {"importance_sampling_level": "sequence", "loss_type": "grpo", "beta": 0.0,
        "epsilon": 3e-4, "epsilon_high": 4e-4}


DATA_KIND = "prompts"  # the output kind this stage trains on


@dataclass
class Settings(Common):
    algorithm: str = setting("grpo", "grpo, or gspo (sequence-level importance sampling)")
    num_generations: int = setting(4, "completions sampled per prompt")
    max_completion_length: int = setting(256, "tokens per completion")
    temperature: float = setting(1.0, "sampling temperature")
    rewards: list[str] = setting(["mcq_exact", "think_format"],
                                 "reward functions: mcq_exact, think_format, answer_match, "
                                 "judge")
    reward_weights: list[float] | None = setting(None, "one weight per reward (default: 1 "
                                                       "each)")
    judge: dict[str, Any] = setting({}, "the LLM judge's endpoint and policy (see below)")

    def check(self, stage: str) -> None:
        super().check(stage)
        if self.algorithm not in ("grpo", "gspo"):
            raise TrainError(f"grpo algorithm {self.algorithm!r}: use grpo or gspo")


def run(store, data_ref: str, model_name: str, loaded: Loaded) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    check_trl(GRPOConfig, loaded)
    s = loaded.settings
    job = start("grpo", store, data_ref, model_name, loaded)
    stage_args = {"num_generations": s.num_generations,
                  "max_completion_length": s.max_completion_length,
                  "temperature": s.temperature}
    if s.reward_weights is not None:
        stage_args["reward_weights"] = s.reward_weights
    if s.algorithm == "gspo":
        stage_args.update(GSPO, steps_per_generation=4 * s.gradient_accumulation_steps)
    args, set_by = trl_config(GRPOConfig, loaded, job.out, job.evaluation is not None,
                              **stage_args)
    trainer = GRPOTrainer(model=job.model, reward_funcs=reward_functions(s.rewards, s.judge),
                          args=args, train_dataset=job.train, eval_dataset=job.evaluation,
                          processing_class=job.tokenizer, peft_config=lora_config(s))
    return train_and_save(trainer, job, args, set_by,
                          extra={"algorithm": s.algorithm, "rewards": s.rewards})
