"""CMExam (Chinese National Medical Licensing Examination) -> canonical `mcq` rows.

Accepted layout (tested): the released CSV files (train.csv, val.csv, test.csv) with the
columns Question, Options (one string, one option per line: "A 选项..."; a capital label
followed by a space, a dot, "、", "：" or the text itself also parses; the labels must run
A, B, C... in order, and a line without the next label, such as "F-type reaction" after
option E, continues the option before it rather than making an option of its own), Answer
(one letter, or several for questions with more than one correct option: "ABD", "A,B,D";
letters run together must be capitals, so "Bad" is rejected as a word), Explanation, and the metadata
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

# a capital label, then a separator, a space or a CJK character ("A 选项", "B、选项", "C选项")
_OPTION = re.compile(r"^\s*([A-Z])(?:\s*[.．、:：)）]\s*|\s+|(?=[^\x00-\x7f]))(.*?)\s*$")
META = {"Disease Group": "disease_group", "Clinical Department": "clinical_department",
        "Medical Discipline": "discipline", "Competency": "competency",
        "Difficulty level": "difficulty"}


def parse_options(text: Any) -> list[dict[str, str]]:
    """Options from one string of "A text" lines."""
    value = clean(text)
    if value is None:
        raise Reject("missing_field:options", "no Options")
    pairs: list[dict[str, str]] = []
    for line in value.splitlines():
        if not line.strip():
            continue
        m = _OPTION.match(line)
        expected = _mcq.LETTERS[len(pairs)] if len(pairs) < len(_mcq.LETTERS) else None
        if m and m.group(2) and m.group(1) == expected:
            pairs.append({"key": m.group(1), "value": m.group(2)})
        elif pairs:  # no label of its own ("F-type reaction"): the option's text goes on
            pairs[-1]["value"] += "\n" + line.strip()
        else:
            raise Reject("bad_options", f"option line {line[:40]!r} has no label and text")
    return _mcq.parse_options({"options": pairs})


class CMExam(Converter):
    source = "cmexam"
    # the README: academic/research use only, commercial use prohibited (the repository's
    # LICENSE file, Apache-2.0, covers its code)
    license = "research-only"
    license_url = "https://github.com/williamliujl/CMExam#ethics-in-data-collection"
    default_subset = "default"
    #: fields a record of this source has (all of one group)
    signatures = (("Question", "Options"), ("question", "options"))

    def row(self, rec):
        r = as_record(rec)
        question = require(r, "Question", "question")
        options = parse_options(r.get("Options", r.get("options")))
        label = _mcq.resolve_set(options, r.get("Answer", r.get("answer")))
        if label is None:  # every CMExam split is labelled
            raise Reject("missing_field:answer", "no Answer")
        meta = {name: clean(r.get(col)) for col, name in META.items()}
        if label and len(label) > 1:
            meta["multiple_answers"] = True
        key = normalize_key(question + "\n" + "\n".join(o["text"] for o in options))
        return {**_mcq.mcq_row(hashlib.sha1(key.encode()).hexdigest()[:16], question, options,
                               label, rationale=clean(r.get("Explanation")), meta=meta),
                "lang": "zh"}
