"""Training stages: one readable module per stage, each consuming dataset versions by
reference and writing an adapter plus training_manifest.json (see common.py).

cpt, sft, reward, rlhf, dpo, kto, grpo. `rlhf` is the seeds' reward-model-then-PPO stage
done with TRL's RLOOTrainer or GRPOTrainer, since TRL 1.x has no PPOTrainer.
"""

import importlib

STAGES = ("cpt", "sft", "reward", "rlhf", "dpo", "kto", "grpo")


def run(stage: str, store, data_ref: str, model: str, config):
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"meddata.train.{stage}").run(store, data_ref, model, config)
