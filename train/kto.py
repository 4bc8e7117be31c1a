"""KTO on a `kto` version (prompt / completion / boolean label). KTOTrainer does not
shuffle and needs both labels in a batch: the kto builder interleaves them, and the
per-device batch size must be above 1.

    meddata train kto --data kto/examples@latest --model runs/dpo-examples
"""

from __future__ import annotations

from .common import (
    TrainError,
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
    from trl import KTOConfig, KTOTrainer

    if config.per_device_train_batch_size < 2:
        raise TrainError("KTO needs per_device_train_batch_size of at least 2")
    train, evaluation, version = load_data(store, data_ref, "kto",
                                           ["prompt", "completion", "label"])
    base = locate(model_name, config)
    tokenizer = load_tokenizer(base)
    model = load_model(base, config)
    out = output_dir(config, "kto", version)
    extra = {"beta": config.beta} if config.beta is not None else {}
    args = KTOConfig(**common_args(config, out, evaluation is not None),
                     max_length=config.max_length, desirable_weight=config.desirable_weight,
                     undesirable_weight=config.undesirable_weight, **extra)
    trainer = KTOTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=lora_config(config))
    return train_and_save(trainer, "kto", config, out, base, [version], args, tokenizer)
