"""medical-o1-reasoning-SFT (FreedomIntelligence) -> `reasoning` rows.

Accepted layout: Question, Complex_CoT, Response records (JSON array as released, JSONL or
Parquet), configs `en`, `zh`, `en_mix`, `zh_mix`. The subset comes from --subset or from
the file name (medical_o1_sft.json -> en, ..._Chinese -> zh, ..._mix -> en_mix,
..._mix_Chinese -> zh_mix). In the mix configs the language is detected per row; in `en`
and `zh` it is the config's. Complex_CoT becomes the rationale, Response the response.
"""

from __future__ import annotations

from pathlib import Path

from meddata.convert import Converter, as_record, require
from meddata.text import clean, detect_lang


class MedicalO1(Converter):
    source = "medical_o1"
    license = "apache-2.0"  # its dataset card
    license_url = "https://huggingface.co/datasets/FreedomIntelligence/medical-o1-reasoning-SFT"
    default_subset = "en"
    #: fields a record of this source has (all of one group)
    signatures = (("Question", "Response"), ("question", "response"))

    def infer_subset(self, file: str) -> str | None:
        name = Path(file).name.lower()
        zh = "chinese" in name or "_zh" in name
        if "mix" in name:
            return "zh_mix" if zh else "en_mix"
        return "zh" if zh else None

    def row(self, rec):
        r = as_record(rec)
        question = require(r, "Question", "question")
        response = require(r, "Response", "response")
        cot = clean(r.get("Complex_CoT"))
        subset = self.subset_for(rec.file)
        lang = subset if subset in ("en", "zh") else detect_lang(question, response)
        return {
            "task": "reasoning",
            "lang": lang,
            "question": question,
            "rationale": cot,
            "response": response,
            "meta": {"ground_truth_answer": clean(r.get("Ground-True Answer"))},
        }
