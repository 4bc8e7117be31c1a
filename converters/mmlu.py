"""MMLU (Hendrycks et al.) -> canonical `mcq` rows, one subset per subject.

Accepted layouts (each has a test):
- the original release, `data/{dev,val,test}/<subject>_<split>.csv`: no header row, six
  columns question, A, B, C, D and the answer letter; quoted fields may span lines; CRLF
  line ends and a missing final newline are fine. Subject and split come from the file
  name (`val` is the validation split).
- the Hugging Face layout (cais/mmlu): question, subject, choices (a list of four texts),
  answer (an int 0-3), in Parquet, JSON or JSON Lines; the subject comes from the row, the
  split from --split or the file name.
`--subset` picks subjects by file name in the original layout: one subject
(`--subset anatomy`), `medical` for the six medical ones (MEDICAL), `general` for the
other 51 (the forgetting check's), or MMLU's categories as lm-evaluation-harness groups
them (CATEGORIES: `stem`, `humanities`, `social_sciences`, `other`), comma-separated for
several (`--subset stem,humanities`); files of other subjects are left out and counted
in the manifest. The subset of every row is its subject; meta `domain` says `medical` or
`general`. Ids are `mmlu/<subject>/<split>/<hash of the question and options>`. The dev
split holds the five few-shot examples per subject that `meddata eval --shots` uses.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from meddata.convert import Reject, as_record, require
from meddata.readers import RawRecord, Span, base_suffix, read_csv, read_file
from meddata.text import clean, normalize_key

from . import _mcq, _subjects

MEDICAL = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
           "medical_genetics", "professional_medicine")
# subject -> category, as lm-evaluation-harness groups MMLU (its mmlu_<category>_tasks tags)
CATEGORIES = {
    **dict.fromkeys("""
        abstract_algebra anatomy astronomy college_biology college_chemistry
        college_computer_science college_mathematics college_physics computer_security
        conceptual_physics electrical_engineering elementary_mathematics high_school_biology
        high_school_chemistry high_school_computer_science high_school_mathematics
        high_school_physics high_school_statistics machine_learning
        """.split(), "stem"),
    **dict.fromkeys("""
        formal_logic high_school_european_history high_school_us_history
        high_school_world_history international_law jurisprudence logical_fallacies
        moral_disputes moral_scenarios philosophy prehistory professional_law
        world_religions
        """.split(), "humanities"),
    **dict.fromkeys("""
        econometrics high_school_geography high_school_government_and_politics
        high_school_macroeconomics high_school_microeconomics high_school_psychology
        human_sexuality professional_psychology public_relations security_studies sociology
        us_foreign_policy
        """.split(), "social_sciences"),
    **dict.fromkeys("""
        business_ethics clinical_knowledge college_medicine global_facts human_aging
        management marketing medical_genetics miscellaneous nutrition
        professional_accounting professional_medicine virology
        """.split(), "other"),
}
FIELDS = ["question", "A", "B", "C", "D", "answer"]
_FILE = re.compile(r"^(?P<subject>.+)_(?P<split>dev|val|test|auxiliary_train)$")
_SPLITS = {"val": "validation", "auxiliary_train": "train"}


def subject_split(file: str) -> tuple[str | None, str | None]:
    """('anatomy', 'test') from .../anatomy_test.csv; (None, None) for other names."""
    m = _FILE.match(Path(file).name.split(".")[0])
    if not m:
        return None, None
    return m.group("subject"), _SPLITS.get(m.group("split"), m.group("split"))


class MMLU(_subjects.SubjectFiles):
    source = "mmlu"
    license = "mit"
    license_url = "https://github.com/hendrycks/test/blob/master/LICENSE"
    default_subset = "unknown"
    categories, medical = CATEGORIES, MEDICAL
    subject_split = staticmethod(subject_split)
    #: fields a record of this source has (all of one group)
    signatures = (("question", "choices"), ("question", "A", "B"))

    def file_subject(self, path: Path) -> str | None:
        # the release's CSV files are named by subject; the Hugging Face layout has a
        # subject per record
        return subject_split(str(path))[0] if base_suffix(path) == ".csv" else None

    def read(self, path: Path, span: Span | None = None):
        if base_suffix(path) == ".csv":  # the release has no header row
            return read_csv(path, fields=FIELDS, span=span)
        return read_file(path, span)

    def split_for(self, rec: RawRecord) -> str:
        return self.split or rec.split or subject_split(rec.file)[1] or super().split_for(rec)

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        question = require(r, "question")
        if "choices" in r:  # the Hugging Face layout
            options = _mcq.parse_options(r, "choices")
            index = _mcq.answer_index(r.get("answer"))
            if index is None or index == _mcq.UNANSWERED:
                raise Reject("missing_field:answer", "no answer index")
            label = _mcq.answer_from_index(index, 0, options)
            subject = clean(r.get("subject"))
        else:
            options = _mcq.parse_options({"options": {k: r.get(k) for k in "ABCD"}})
            label = _mcq.resolve(options, letter=r.get("answer"))
            if label is None:  # every MMLU split is labelled
                raise Reject("missing_field:answer", "no answer letter")
            subject = subject_split(rec.file)[0]
        if not subject:
            raise Reject("missing_field:subject", "no subject in the row or the file name")
        key = normalize_key(question + "\n" + "\n".join(o["text"] for o in options))
        row = _mcq.mcq_row(hashlib.sha1(key.encode()).hexdigest()[:16], question, options,
                           label, meta={"subject": subject,
                                        "domain": _subjects.domain(subject, MEDICAL)})
        return {**row, "subset": subject, "lang": "en"}
