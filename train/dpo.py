"""Direct preference optimization on a `preference` version (prompt / chosen / rejected
conversations). With LoRA the reference model is the base with the adapter switched off,
i.e. the starting checkpoint (for example the SFT stage's merged model).

    meddata train dpo --data preference/examples@latest --model runs/sft-examples
"""

from __future__ import annotations

from .common import (
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
    from trl import DPOConfig, DPOTrainer

    cols = ["prompt", "chosen", "rejected"]
    train, evaluation, version = load_data(store, data_ref, "dpo", cols)
    base = locate(model_name, config)
    tokenizer = load_tokenizer(base)
    model = load_model(base, config)
    out = output_dir(config, "dpo", version)
    extra = {"beta": config.beta} if config.beta is not None else {}
    args = DPOConfig(**common_args(config, out, evaluation is not None),
                     max_length=config.max_length, **extra)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                         processing_class=tokenizer, peft_config=lora_config(config))
    return train_and_save(trainer, "dpo", config, out, base, [version], args, tokenizer)
