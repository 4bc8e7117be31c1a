"""Huatuo-26M (FreedomIntelligence) -> canonical `open_qa` rows.

Accepted layouts (each has a test), JSON Lines, JSON arrays or Parquet:
- question / answer records (the plain QA pairs);
- the Lite release: id, question, answer, score, label (the hospital department) and
  related_diseases, which go to meta (score, department, related_diseases);
- the released parts and test sets: `questions` and `answers`, each a string or a list.
  `questions` may hold paraphrases of one question (a list of strings, or a list of such
  lists); each answer becomes one row whose question is the first phrasing, with the
  other phrasings in meta `paraphrases`. A record with several answers becomes several
  rows, each its own raw record (`<position>` shared, the answer's number in its id).
Ids are the release's id where it has one, else a hash of the question and the answer.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from meddata.convert import Converter, Reject, as_record, require
from meddata.readers import RawRecord, Span, read_file
from meddata.text import clean


def _phrasings(questions: Any) -> list[str]:
    """Every phrasing of a `questions` value (a string, a list, or a list of lists)."""
    if isinstance(questions, str):
        return [questions]
    out: list[str] = []
    for item in questions if isinstance(questions, list) else []:
        out += _phrasings(item) if isinstance(item, list) else [item] if isinstance(
            item, str) else []
    return [q for q in (clean(x) for x in out) if q]


class Huatuo26M(Converter):
    source = "huatuo26m"
    license = "apache-2.0"  # the README's License section
    license_url = "https://github.com/FreedomIntelligence/Huatuo-26M#license"
    default_subset = "default"
    #: fields a record of this source has (all of one group)
    signatures = (("questions",), ("answers",), ("question", "answer"))

    def read(self, path: Path, span: Span | None = None):
        """A record with several answers becomes one record per answer."""
        for rec in read_file(path, span):
            r = rec.record
            if rec.error or not isinstance(r, dict) or not isinstance(r.get("answers"), list) \
                    or len(r["answers"]) < 2:
                yield rec
                continue
            for k, answer in enumerate(r["answers"], 1):
                yield rec.part({**r, "answers": [answer], "answer_number": k})

    def infer_subset(self, file: str) -> str | None:
        name = Path(file).name.lower()
        for key in ("lite", "encyclopedia", "knowledge_graph", "consultation", "test"):
            if key in name:
                return key
        return None

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        meta: dict[str, Any] = {}
        if "questions" in r or "answers" in r:
            phrasings = _phrasings(r.get("questions"))
            answers = r.get("answers")
            answers = answers if isinstance(answers, list) else [answers]
            if not phrasings:
                raise Reject("missing_field:questions", "no question text in `questions`")
            if len(answers) != 1 or clean(answers[0]) is None:
                raise Reject("missing_field:answers", "no answer in `answers`")
            question, response = phrasings[0], clean(answers[0])
            meta["paraphrases"] = phrasings[1:] or None
            meta["answer_number"] = r.get("answer_number")
        else:
            question = require(r, "question")
            response = require(r, "answer")
            meta.update(score=r.get("score"), department=clean(r.get("label")),
                        related_diseases=r.get("related_diseases"))
        source_id = clean(r.get("id")) or hashlib.sha1(
            f"{question}\x1f{response}".encode()).hexdigest()[:16]
        return {"source_id": source_id, "task": "open_qa", "lang": "zh", "question": question,
                "response": response, "meta": meta}
