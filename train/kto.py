"""KTO on a `kto` version (prompt / completion / boolean label). KTOTrainer does not
shuffle and needs both labels in a batch: the kto builder interleaves them, and the
per-device batch size must be above 1.

    meddata train kto --data kto/examples@latest --model runs/dpo-examples
"""

from __future__ import annotations

from .common import TrainError, common_args, lora_config, start, train_and_save


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import KTOConfig, KTOTrainer

    if config.per_device_train_batch_size < 2:
        raise TrainError("KTO needs per_device_train_batch_size of at least 2")
    job = start("kto", store, data_ref, model_name, config, ["prompt", "completion", "label"])
    extra = {"beta": config.beta} if config.beta is not None else {}
    args = KTOConfig(**common_args(config, job.out, job.evaluation is not None),
                     max_length=config.max_length, desirable_weight=config.desirable_weight,
                     undesirable_weight=config.undesirable_weight, **extra)
    trainer = KTOTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(config))
    return train_and_save(trainer, "kto", config, job, args)
