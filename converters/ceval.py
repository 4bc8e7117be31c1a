"""C-Eval (hkust-nlp/ceval) -> canonical `mcq` rows, one subset per subject.

Accepted layouts (each has a test):
- the original release (ceval-exam.zip): `{dev,val,test}/<subject>_<split>.csv`, UTF-8,
  with a header row `id,question,A,B,C,D,answer,explanation` (the dev split's five
  few-shot examples carry explanations); a file without the `explanation` column, or
  with an empty one, is fine; the test split has no `answer` column (labels were never
  released), so its rows are kept with a null answer. Quoted fields may span lines.
  Subject and split come from the file name: `val` is the validation split (lm-eval's
  `ceval-valid` evaluates it), `dev` holds the few-shot examples.
- the Hugging Face layout (ceval/ceval-exam): the same columns in Parquet (or JSON, JSON
  Lines) under `<subject>/<split>-00000-of-00001.parquet`: the subject is the folder.
Each answer is one of the letters A-D; anything else is a reject. The explanation becomes
the rationale. `--subset` picks subjects by file name: one subject, `medical` (MEDICAL),
`general` (every other subject), or C-Eval's categories from its subject_mapping.json
(`stem`, `humanities`, `social_sciences`, `other`), comma-separated for several. The
subset of every row is its subject; meta holds the subject, its Chinese name (which
lm-eval's prompt names), its category and `domain` (medical or general). Ids are
`ceval/<subject>/<split>/<the file's id>`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from meddata.convert import Reject, as_record, require
from meddata.readers import RawRecord
from meddata.text import clean

from . import _mcq, _subjects

# subject -> (its Chinese name, its category), from C-Eval's subject_mapping.json
SUBJECTS = {
    "accountant": ("注册会计师", "other"),
    "advanced_mathematics": ("高等数学", "stem"),
    "art_studies": ("艺术学", "humanities"),
    "basic_medicine": ("基础医学", "other"),
    "business_administration": ("工商管理", "social_sciences"),
    "chinese_language_and_literature": ("中国语言文学", "humanities"),
    "civil_servant": ("公务员", "other"),
    "clinical_medicine": ("临床医学", "other"),
    "college_chemistry": ("大学化学", "stem"),
    "college_economics": ("大学经济学", "social_sciences"),
    "college_physics": ("大学物理", "stem"),
    "college_programming": ("大学编程", "stem"),
    "computer_architecture": ("计算机组成", "stem"),
    "computer_network": ("计算机网络", "stem"),
    "discrete_mathematics": ("离散数学", "stem"),
    "education_science": ("教育学", "social_sciences"),
    "electrical_engineer": ("注册电气工程师", "stem"),
    "environmental_impact_assessment_engineer": ("环境影响评价工程师", "other"),
    "fire_engineer": ("注册消防工程师", "other"),
    "high_school_biology": ("高中生物", "stem"),
    "high_school_chemistry": ("高中化学", "stem"),
    "high_school_chinese": ("高中语文", "humanities"),
    "high_school_geography": ("高中地理", "social_sciences"),
    "high_school_history": ("高中历史", "humanities"),
    "high_school_mathematics": ("高中数学", "stem"),
    "high_school_physics": ("高中物理", "stem"),
    "high_school_politics": ("高中政治", "social_sciences"),
    "ideological_and_moral_cultivation": ("思想道德修养与法律基础", "humanities"),
    "law": ("法学", "humanities"),
    "legal_professional": ("法律职业资格", "humanities"),
    "logic": ("逻辑学", "humanities"),
    "mao_zedong_thought": ("毛泽东思想和中国特色社会主义理论体系概论", "social_sciences"),
    "marxism": ("马克思主义基本原理", "social_sciences"),
    "metrology_engineer": ("注册计量师", "stem"),
    "middle_school_biology": ("初中生物", "stem"),
    "middle_school_chemistry": ("初中化学", "stem"),
    "middle_school_geography": ("初中地理", "social_sciences"),
    "middle_school_history": ("初中历史", "humanities"),
    "middle_school_mathematics": ("初中数学", "stem"),
    "middle_school_physics": ("初中物理", "stem"),
    "middle_school_politics": ("初中政治", "social_sciences"),
    "modern_chinese_history": ("近代史纲要", "humanities"),
    "operating_system": ("操作系统", "stem"),
    "physician": ("医师资格", "other"),
    "plant_protection": ("植物保护", "other"),
    "probability_and_statistics": ("概率统计", "stem"),
    "professional_tour_guide": ("导游资格", "humanities"),
    "sports_science": ("体育学", "other"),
    "tax_accountant": ("税务师", "other"),
    "teacher_qualification": ("教师资格", "social_sciences"),
    "urban_and_rural_planner": ("注册城乡规划师", "other"),
    "veterinary_medicine": ("兽医学", "stem"),
}
CATEGORIES = {s: c for s, (_, c) in SUBJECTS.items()}
MEDICAL = ("basic_medicine", "clinical_medicine", "physician")
_FILE = re.compile(r"^(?P<subject>.+)_(?P<split>dev|val|test)$")
_SPLITS = {"val": "validation"}


def subject_split(file: str) -> tuple[str | None, str | None]:
    """('computer_network', 'validation') from .../computer_network_val.csv, or from
    .../computer_network/val-00000-of-00001.parquet; (None, None) for other names."""
    path = Path(file)
    m = _FILE.match(path.name.split(".")[0])
    if m:
        return m.group("subject"), _SPLITS.get(m.group("split"), m.group("split"))
    split = re.split(r"[-_.]", path.name)[0]
    if split in ("dev", "val", "test") and path.parent.name in SUBJECTS:
        return path.parent.name, _SPLITS.get(split, split)
    return None, None


class CEval(_subjects.SubjectFiles):
    source = "ceval"
    license = "cc-by-nc-sa-4.0"  # the README's Licenses section and LICENSE-DATA
    license_url = "https://github.com/hkust-nlp/ceval#licenses"
    default_subset = "unknown"
    categories, medical = CATEGORIES, MEDICAL
    subject_split = staticmethod(subject_split)

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        subject = subject_split(rec.file)[0]
        if subject is None:
            raise Reject("missing_field:subject", "the file name is not "
                         "<subject>_<dev|val|test>.csv nor <subject>/<split>-*.parquet")
        question = require(r, "question")
        options = _mcq.parse_options({"options": {k: r.get(k) for k in "ABCD"}})
        answer = clean(r.get("answer"))
        label = None
        if answer is not None:
            if answer not in ("A", "B", "C", "D"):
                raise Reject("bad_answer", f"answer {answer[:20]!r} is not A, B, C or D")
            label = answer
        source_id = clean(r.get("id"))
        if source_id is None:
            raise Reject("missing_field:id", "no id")
        zh, category = SUBJECTS.get(subject, (None, None))
        row = _mcq.mcq_row(source_id, question, options, label,
                           rationale=clean(r.get("explanation")),
                           meta={"subject": subject, "subject_zh": zh, "category": category,
                                 "domain": _subjects.domain(subject, MEDICAL)})
        return {**row, "subset": subject, "lang": "zh"}
