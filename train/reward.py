"""A reward model on a `preference` version: a sequence-classification head with one
output, trained on chosen versus rejected (TRL RewardTrainer), LoRA on top. Its output
folder is what the `rlhf` stage takes as `reward_model`.

    meddata train reward --data preference/examples@latest --model runs/sft-examples
"""

from __future__ import annotations

from dataclasses import dataclass

from .common import check_trl, lora_config, start, train_and_save, trl_config
from .settings import Common, Loaded, setting

# what the trainer does with rows over max_length (TRL 1.16), for the length warning
OVER_MAX_LENGTH = "RewardTrainer drops those pairs"
DATA_KIND = "preference"  # the output kind this stage trains on


@dataclass
class Settings(Common):
    max_length: int = setting(1024, "tokens per prompt + answer; RewardTrainer drops longer "
                                    "pairs")
    learning_rate: float = setting(1e-5, "peak learning rate")


def run(store, data_ref: str, model_name: str, loaded: Loaded) -> dict:
    from trl import RewardConfig, RewardTrainer

    check_trl(RewardConfig, loaded)
    s = loaded.settings
    job = start("reward", store, data_ref, model_name, loaded, ["prompt", "chosen", "rejected"],
                head="seq_cls", max_length=s.max_length)
    args, set_by = trl_config(RewardConfig, loaded, job.out, job.evaluation is not None,
                              max_length=s.max_length)
    trainer = RewardTrainer(model=job.model, args=args, train_dataset=job.train,
                            eval_dataset=job.evaluation, processing_class=job.tokenizer,
                            peft_config=lora_config(s, task_type="SEQ_CLS"))
    return train_and_save(trainer, job, args, set_by, extra={"head": "seq_cls"})
