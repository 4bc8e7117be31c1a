"""GRPO and GSPO on a `prompts` version, with rewards computed from its columns.

GSPO is GRPO with sequence-level importance sampling; `algorithm: gspo` sets the values of
the GSPO paper as TRL documents them: importance_sampling_level sequence, loss_type grpo
(TRL warns that dapo or dr_grpo with sequence-level sampling is not the GSPO loss),
beta 0, epsilon 3e-4, epsilon_high 4e-4, steps_per_generation 4 x gradient accumulation.
Any of them can still be set in the config. TRL's loss_type choices: grpo (per-sequence
normalisation, the original), dr_grpo (no length normalisation), dapo (token-level
normalisation over the batch, TRL's default), bnpo, and the others its GRPOConfig lists.

Rewards (config `rewards`, weighted by `reward_weights`): mcq_exact (letter or yes/no
after </think>), think_format (one <think> block, then an answer), answer_match, and
judge (an LLM judge over an OpenAI-compatible endpoint, config `judge`).

    meddata train grpo --data prompts/examples@latest --model runs/sft-examples \\
        --set algorithm=gspo --set rewards=[mcq_exact,think_format]
"""

from __future__ import annotations

from .common import TrainError, common_args, lora_config, start, train_and_save
from .rewards import reward_functions

GSPO = {"importance_sampling_level": "sequence", "loss_type": "grpo", "beta": 0.0,
        "epsilon": 3e-4, "epsilon_high": 4e-4}


def rl_args(config, out, has_eval: bool, algorithm: str) -> dict:
    """The GRPOConfig / RLOOConfig fields for this run."""
    args = common_args(config, out, has_eval)
    args.update(num_generations=config.num_generations,
                max_completion_length=config.max_completion_length,
                temperature=config.temperature)
    if config.reward_weights is not None:
        args["reward_weights"] = config.reward_weights
    if algorithm == "gspo":
        args.update(GSPO, steps_per_generation=4 * config.gradient_accumulation_steps)
    for key in ("loss_type", "importance_sampling_level", "beta", "epsilon", "epsilon_high",
                "steps_per_generation"):
        if getattr(config, key) is not None:
            args[key] = getattr(config, key)
    return args


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    algorithm = config.algorithm or "grpo"
    if algorithm not in ("grpo", "gspo"):
        raise TrainError(f"grpo algorithm {algorithm!r}: use grpo or gspo")
    job = start("grpo", store, data_ref, model_name, config)
    args = GRPOConfig(**rl_args(config, job.out, job.evaluation is not None, algorithm))
    rewards = reward_functions(config.rewards, config.judge)
    trainer = GRPOTrainer(model=job.model, reward_funcs=rewards, args=args,
                          train_dataset=job.train, eval_dataset=job.evaluation,
                          processing_class=job.tokenizer, peft_config=lora_config(config))
    return train_and_save(trainer, "grpo", config, job, args,
                          extra={"algorithm": algorithm, "rewards": config.rewards})
