"""Training stages: one readable module per stage, each declaring its own `Settings` and
consuming dataset versions by reference; each writes an adapter plus
training_manifest.json (common.py).

cpt, sft, reward, rlhf, dpo, kto, grpo. `rlhf` is the seeds' reward-model-then-PPO stage
done with TRL's RLOOTrainer or GRPOTrainer, since TRL 1.x has no PPOTrainer. The modules
import torch and TRL only when a stage runs, so listing stages and settings is fast.
"""

import importlib

STAGES = ("cpt", "sft", "reward", "rlhf", "dpo", "kto", "grpo")


def module(stage: str):
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"meddata.train.{stage}")


def settings_classes() -> dict:
    return {stage: module(stage).Settings for stage in STAGES}


def load_settings(stage: str, config: str | None, overrides: dict):
    from .settings import load

    return load(module(stage).Settings, stage, config, overrides, settings_classes())


def check(stage: str, store, data_ref: str, model: str, loaded) -> None:
    """The checks that cost nothing, before torch, TRL, data rows or a model are loaded: the
    data version exists and is the stage's kind, and the model name is an alias, a local
    folder or a hub id that may be loaded (meddata.models). Raises TrainError, a store
    error or ModelNotFound, each one line."""
    from .common import data_version, locate

    data_version(store, data_ref, stage)
    locate(model, loaded.settings)


def run(stage: str, store, data_ref: str, model: str, loaded):
    from .common import quiet_known_warnings

    check(stage, store, data_ref, model, loaded)
    quiet_known_warnings()  # before the stage imports TRL, peft and bitsandbytes
    return module(stage).run(store, data_ref, model, loaded)


def data_kind(stage: str) -> str:
    """The output kind `stage` trains on (its module's DATA_KIND)."""
    return module(stage).DATA_KIND


def bundled_configs() -> list[str]:
    """The names of the bundled config files (train/configs/NAME.yaml)."""
    from pathlib import Path

    return sorted(p.stem for p in (Path(__file__).parent / "configs").glob("*.yaml"))
