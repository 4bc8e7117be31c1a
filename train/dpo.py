"""Direct preference optimization on a `preference` version (prompt / chosen / rejected
conversations). With LoRA the reference model is the base with the adapter switched off,
i.e. the starting checkpoint (for example the SFT stage's merged model).

    meddata train dpo --data preference/examples@latest --model runs/sft-examples
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import check_trl, lora_config, start, train_and_save, trl_config
from .settings import Common, Loaded, setting

# what the trainer does with rows over max_length (TRL 1.16), for the length warning
OVER_MAX_LENGTH = "DPOTrainer truncates them"
DATA_KIND = "preference"  # the output kind this stage trains on


@dataclass
class Settings(Common):
    max_length: int = setting(1024, "tokens per prompt + answer; longer pairs are truncated")
    learning_rate: float = setting(5e-6, "peak learning rate")
    beta: float | None = setting(None, "KL strength to the reference (None: TRL's default)")


def run(store, data_ref: str, model_name: str, loaded: Loaded) -> dict:
    from trl import DPOConfig, DPOTrainer

    check_trl(DPOConfig, loaded)
    s = loaded.settings
    job = start("dpo", store, data_ref, model_name, loaded, ["prompt", "chosen", "rejected"],
                max_length=s.max_length)
    args, set_by = trl_config(DPOConfig, loaded, job.out, job.evaluation is not None,
                              max_length=s.max_length,
                              **({"beta": s.beta} if s.beta is not None else {}))
    trainer = DPOTrainer(model=job.model, args=args, train_dataset=job.train,
                         eval_dataset=job.evaluation, processing_class=job.tokenizer,
                         peft_config=lora_config(s))
    return train_and_save(trainer, job, args, set_by)
