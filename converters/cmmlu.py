"""CMMLU (haonan-li/CMMLU) -> canonical `mcq` rows, one subset per subject.

Accepted layout (tested): the original release, `data/{dev,test}/<subject>.csv`, UTF-8,
with a header row whose first column is an unnamed row number: `,Question,A,B,C,D,Answer`.
The subject is the file name and the split its folder (`dev` holds the five few-shot
examples per subject, `test` the items lm-eval's `cmmlu` evaluates); quoted fields may
span lines. Records with the same fields in JSON, JSON Lines or Parquet files named and
placed alike are read too (the row number then comes from an `id` field, else a hash of
the record). Each answer is one of the letters A-D; anything else is a reject.
`--subset` picks subjects by file name: one subject, `medical` (MEDICAL), `general`
(every other subject), or CMMLU's categories from its src/categories.py (`stem`,
`humanities`, `social_sciences`, `other`: a subject's first subcategory decides, so the
China-specific subjects fall in the category of their field), comma-separated for
several. The subset of every row is its subject; meta holds the subject, its Chinese
name (which lm-eval's prompt names), its category and `domain` (medical or general).
Ids are `cmmlu/<subject>/<split>/<the row number>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meddata.convert import Reject, as_record, require
from meddata.readers import RawRecord
from meddata.text import clean

from . import _mcq, _subjects

# subject -> (its Chinese name, its category), from CMMLU's src/categories.py
SUBJECTS = {
    "agronomy": ("农学", "other"),
    "anatomy": ("解剖学", "stem"),
    "ancient_chinese": ("古汉语", "social_sciences"),
    "arts": ("艺术学", "humanities"),
    "astronomy": ("天文学", "stem"),
    "business_ethics": ("商业伦理", "social_sciences"),
    "chinese_civil_service_exam": ("中国公务员考试", "social_sciences"),
    "chinese_driving_rule": ("中国驾驶规则", "other"),
    "chinese_food_culture": ("中国饮食文化", "social_sciences"),
    "chinese_foreign_policy": ("中国外交政策", "social_sciences"),
    "chinese_history": ("中国历史", "humanities"),
    "chinese_literature": ("中国文学", "humanities"),
    "chinese_teacher_qualification": ("中国教师资格", "social_sciences"),
    "clinical_knowledge": ("临床知识", "other"),
    "college_actuarial_science": ("大学精算学", "stem"),
    "college_education": ("大学教育学", "social_sciences"),
    "college_engineering_hydrology": ("大学工程水文学", "stem"),
    "college_law": ("大学法律", "humanities"),
    "college_mathematics": ("大学数学", "stem"),
    "college_medical_statistics": ("大学医学统计", "stem"),
    "college_medicine": ("大学医学", "other"),
    "computer_science": ("计算机科学", "stem"),
    "computer_security": ("计算机安全", "other"),
    "conceptual_physics": ("概念物理学", "stem"),
    "construction_project_management": ("建设工程管理", "other"),
    "economics": ("经济学", "social_sciences"),
    "education": ("教育学", "social_sciences"),
    "electrical_engineering": ("电气工程", "stem"),
    "elementary_chinese": ("小学语文", "social_sciences"),
    "elementary_commonsense": ("小学常识", "other"),
    "elementary_information_and_technology": ("小学信息技术", "other"),
    "elementary_mathematics": ("初等数学", "stem"),
    "ethnology": ("民族学", "social_sciences"),
    "food_science": ("食品科学", "other"),
    "genetics": ("遗传学", "stem"),
    "global_facts": ("全球事实", "humanities"),
    "high_school_biology": ("高中生物", "stem"),
    "high_school_chemistry": ("高中化学", "stem"),
    "high_school_geography": ("高中地理", "social_sciences"),
    "high_school_mathematics": ("高中数学", "stem"),
    "high_school_physics": ("高中物理学", "stem"),
    "high_school_politics": ("高中政治", "social_sciences"),
    "human_sexuality": ("人类性行为", "other"),
    "international_law": ("国际法学", "humanities"),
    "journalism": ("新闻学", "social_sciences"),
    "jurisprudence": ("法理学", "humanities"),
    "legal_and_moral_basis": ("法律与道德基础", "other"),
    "logical": ("逻辑学", "humanities"),
    "machine_learning": ("机器学习", "stem"),
    "management": ("管理学", "social_sciences"),
    "marketing": ("市场营销", "social_sciences"),
    "marxist_theory": ("马克思主义理论", "humanities"),
    "modern_chinese": ("现代汉语", "social_sciences"),
    "nutrition": ("营养学", "other"),
    "philosophy": ("哲学", "humanities"),
    "professional_accounting": ("专业会计", "social_sciences"),
    "professional_law": ("专业法学", "humanities"),
    "professional_medicine": ("专业医学", "other"),
    "professional_psychology": ("专业心理学", "social_sciences"),
    "public_relations": ("公共关系", "social_sciences"),
    "security_study": ("安全研究", "social_sciences"),
    "sociology": ("社会学", "social_sciences"),
    "sports_science": ("体育学", "other"),
    "traditional_chinese_medicine": ("中医中药", "other"),
    "virology": ("病毒学", "stem"),
    "world_history": ("世界历史", "humanities"),
    "world_religions": ("世界宗教", "humanities"),
}
CATEGORIES = {s: c for s, (_, c) in SUBJECTS.items()}
MEDICAL = ("anatomy", "clinical_knowledge", "college_medical_statistics", "college_medicine",
           "professional_medicine", "traditional_chinese_medicine")
SPLITS = ("dev", "test")


def subject_split(file: str) -> tuple[str | None, str | None]:
    """('anatomy', 'test') from .../test/anatomy.csv; (subject, None) when the folder is
    neither dev nor test."""
    path = Path(file)
    split = path.parent.name if path.parent.name in SPLITS else None
    return path.name.split(".")[0], split


class CMMLU(_subjects.SubjectFiles):
    source = "cmmlu"
    # the README's License section; the Hugging Face card (haonan-li/cmmlu) says cc-by-nc-4.0
    license = "cc-by-nc-sa-4.0"
    license_url = "https://github.com/haonan-li/CMMLU#license"
    default_subset = "unknown"
    categories, medical = CATEGORIES, MEDICAL
    subject_split = staticmethod(subject_split)

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        subject = subject_split(rec.file)[0]
        question = require(r, "Question")
        options = _mcq.parse_options({"options": {k: r.get(k) for k in "ABCD"}})
        answer = clean(r.get("Answer"))
        if answer not in ("A", "B", "C", "D"):
            raise Reject("bad_answer" if answer else "missing_field:Answer",
                         f"answer {answer!r} is not A, B, C or D")
        source_id = clean(r.get("", r.get("id")))
        zh, category = SUBJECTS.get(subject, (None, None))
        row = _mcq.mcq_row(source_id, question, options, answer,
                           meta={"subject": subject, "subject_zh": zh, "category": category,
                                 "domain": _subjects.domain(subject, MEDICAL)})
        return {**row, "subset": subject, "lang": "zh"}
