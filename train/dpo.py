"""Direct preference optimization on a `preference` version (prompt / chosen / rejected
conversations). With LoRA the reference model is the base with the adapter switched off,
i.e. the starting checkpoint (for example the SFT stage's merged model).

    meddata train dpo --data preference/examples@latest --model runs/sft-examples
"""

from __future__ import annotations

from .common import common_args, lora_config, start, train_and_save


def run(store, data_ref: str, model_name: str, config) -> dict:
    from trl import DPOConfig, DPOTrainer

    job = start("dpo", store, data_ref, model_name, config, ["prompt", "chosen", "rejected"])
    extra = {"beta": config.beta} if config.beta is not None else {}
    args = DPOConfig(**common_args(config, job.out, job.evaluation is not None),
                     max_length=config.max_length, **extra)
    trainer = DPOTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(config))
    return train_and_save(trainer, "dpo", config, job, args)
