"""Chinese-medical-dialogue-data (Toyhom) CSV -> `open_qa` rows.

Accepted layout: CSV with header department,title,ask,answer, GB18030-encoded as released
(UTF-8 is accepted too; quoted fields may span lines). `ask` is the question (the `title`
when `ask` is empty), `answer` the response; department and title go to meta. The subset is
the department file's stem unless --subset is given.
"""

from __future__ import annotations

from pathlib import Path

from meddata.convert import Converter, as_record, require
from meddata.text import clean


class ChineseMedicalDialogue(Converter):
    source = "chinese_medical_dialogue"
    license = "mit"
    license_url = "https://github.com/Toyhom/Chinese-medical-dialogue-data/blob/master/LICENSE"
    default_subset = "default"
    #: fields a record of this source has (all of one group)
    signatures = (("ask", "answer"), ("title", "answer"))

    def infer_subset(self, file: str) -> str | None:
        stem = Path(file).name.split(".")[0]
        dept = stem.split("_")[1] if "_" in stem else None
        return {"内科": "internal", "外科": "surgery", "儿科": "pediatrics", "妇产科": "obstetrics",
                "男科": "andrology", "肿瘤科": "oncology"}.get(dept or "", None)

    def row(self, rec):
        r = as_record(rec)
        return {
            "task": "open_qa",
            "question": require(r, "ask", "title"),
            "response": require(r, "answer"),
            "meta": {"department": clean(r.get("department")), "title": clean(r.get("title"))},
        }
