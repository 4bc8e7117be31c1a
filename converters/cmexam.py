"""CMExam (Chinese National Medical Licensing Examination) -> canonical `mcq` rows.

Accepted layout (tested): the released CSV files (train.csv, val.csv, test.csv) with the
columns Question, Options (one string, one option per line: "A 选项..."; a label followed
by a space, a dot, "、" or "：" also parses), Answer (one letter, or several for questions
with more than one correct option: "ABD", "A,B,D"), Explanation, and the metadata
columns (Disease Group, Clinical Department, Medical Discipline, Competency, Difficulty
level), which go to meta. Rows with several correct letters keep the whole set
(`answer_label` "ABD"; meta `multiple_answers: true`). The split comes from the file name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from meddata.convert import Converter, Reject, as_record, require
from meddata.text import clean, normalize_key

from . import _mcq

_OPTION = re.compile(r"^\s*([A-Za-z])\s*[.、:：)）]?\s*(.*?)\s*$")
META = {"Disease Group": "disease_group", "Clinical Department": "clinical_department",
        "Medical Discipline": "discipline", "Competency": "competency",
        "Difficulty level": "difficulty"}


def parse_options(text: Any) -> list[dict[str, str]]:
    """Options from one string of "A text" lines."""
    value = clean(text)
    if value is None:
        raise Reject("missing_field:options", "no Options")
    pairs = []
    for line in value.splitlines():
        if not line.strip():
            continue
        m = _OPTION.match(line)
        if not m or not m.group(2):
            raise Reject("bad_options", f"option line {line[:40]!r} has no label and text")
        pairs.append({"key": m.group(1).upper(), "value": m.group(2)})
    return _mcq.parse_options({"options": pairs})


class CMExam(Converter):
    source = "cmexam"
    # the README: academic/research use only, commercial use prohibited (the repository's
    # LICENSE file, Apache-2.0, covers its code)
    license = "research-only"
    license_url = "https://github.com/williamliujl/CMExam#ethics-in-data-collection"
    default_subset = "default"

    def row(self, rec):
        r = as_record(rec)
        question = require(r, "Question", "question")
        options = parse_options(r.get("Options", r.get("options")))
        label = _mcq.resolve_set(options, r.get("Answer", r.get("answer")))
        meta = {name: clean(r.get(col)) for col, name in META.items()}
        if label and len(label) > 1:
            meta["multiple_answers"] = True
        key = normalize_key(question + "\n" + "\n".join(o["text"] for o in options))
        return {**_mcq.mcq_row(hashlib.sha1(key.encode()).hexdigest()[:16], question, options,
                               label, rationale=clean(r.get("Explanation")), meta=meta),
                "lang": "zh"}
