"""KTO on a `kto` version (prompt / completion / boolean label). KTOTrainer does not
shuffle and needs both labels in a batch: the kto builder interleaves them, and the
per-device batch size must be above 1.

    meddata train kto --data kto/examples@latest --model runs/dpo-examples
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import check_trl, lora_config, start, train_and_save, trl_config
from .settings import Common, Loaded, TrainError, setting

# what the trainer does with rows over max_length (TRL 1.16), for the length warning
OVER_MAX_LENGTH = "KTOTrainer truncates them"
DATA_KIND = "kto"  # the output kind this stage trains on


@dataclass
class Settings(Common):
    max_length: int = setting(1024, "tokens per prompt + completion; longer rows are "
                                    "truncated")
    learning_rate: float = setting(5e-6, "peak learning rate")
    beta: float | None = setting(None, "KL strength to the reference (None: TRL's default)")
    desirable_weight: float = setting(1.0, "loss weight of label-true rows")
    undesirable_weight: float = setting(1.0, "loss weight of label-false rows")

    def check(self, stage: str) -> None:
        super().check(stage)
        if self.per_device_train_batch_size < 2:
            raise TrainError("kto needs per_device_train_batch_size of at least 2 (both "
                             "labels in a batch)")


def run(store, data_ref: str, model_name: str, loaded: Loaded) -> dict:
    from trl import KTOConfig, KTOTrainer

    check_trl(KTOConfig, loaded)
    s = loaded.settings
    job = start("kto", store, data_ref, model_name, loaded, ["prompt", "completion", "label"],
                max_length=s.max_length)
    args, set_by = trl_config(KTOConfig, loaded, job.out, job.evaluation is not None,
                              max_length=s.max_length, desirable_weight=s.desirable_weight,
                              undesirable_weight=s.undesirable_weight,
                              **({"beta": s.beta} if s.beta is not None else {}))
    trainer = KTOTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(s))
    return train_and_save(trainer, job, args, set_by)
