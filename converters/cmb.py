"""CMB (Chinese Medical Benchmark) -> canonical rows: CMB-Exam as `mcq`, CMB-Clin as
`open_qa`.

Accepted layouts (each has a test):
- CMB-Exam: JSON records (an array, or JSON Lines) with exam_type, exam_class,
  exam_subject, question, question_type (单项选择题 for one correct option, 多项选择题 for
  several), option (an object of letters), answer (a letter, or letters: "ACD") and
  explanation. A 多项选择题 keeps its whole set of correct letters (`answer_label` "ACD";
  meta `multiple_answers: true`); a 单项选择题 whose answer holds several letters is
  rejected (`answer_mismatch`). Subset `exam`.
- CMB-Clin: a JSON array of clinical cases (id, title, description, QA_pairs: a list of
  {question, answer}). Each pair is one `open_qa` row whose context is the case's
  description, with the id `cmb/clin/<split>/<case id>-<pair number>` and the case's id,
  title and pair number in meta (evaluation scores per pair and per case). Each pair is its
  own raw record (the case without its other pairs, plus the pair), so a bad pair costs
  only itself. Subset `clin`.
The split comes from --split or the file name (CMB-Exam's val, test; CMB-Clin is a test
set: `test` unless the file name says otherwise).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from meddata.convert import Converter, Reject, as_record, require
from meddata.readers import RawRecord, read_file
from meddata.text import clean, normalize_key

from . import _mcq

MULTIPLE, SINGLE = "多项选择题", "单项选择题"


class CMB(Converter):
    source = "cmb"
    license = "apache-2.0"
    license_url = "https://github.com/FreedomIntelligence/CMB/blob/main/LICENSE"
    default_subset = "exam"

    def read(self, path: Path):
        """CMB-Clin cases become one record per question-answer pair."""
        for rec in read_file(path):
            case = rec.record
            pairs = case.get("QA_pairs") if not rec.error and isinstance(case, dict) else None
            if not isinstance(pairs, list) or not pairs:
                yield rec
                continue
            shared = {k: v for k, v in case.items() if k != "QA_pairs"}
            for k, pair in enumerate(pairs, 1):
                yield rec.part({**shared, "pair": k, "QA_pair": pair})

    def infer_subset(self, file: str) -> str | None:
        return "clin" if "clin" in Path(file).name.lower() else None

    def split_for(self, rec: RawRecord) -> str:
        if self.split or rec.split:
            return self.split or rec.split
        name = Path(rec.file).name.lower()
        if "clin" in name and not any(w in name for w in ("train", "val", "dev")):
            return "test"
        return super().split_for(rec)

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        if "QA_pair" in r or "QA_pairs" in r:
            return self.clin_row(r)
        return self.exam_row(r)

    def clin_row(self, r: dict[str, Any]) -> dict[str, Any]:
        pair = r.get("QA_pair")
        if not isinstance(pair, dict):
            raise Reject("missing_field:QA_pairs", "a case without question-answer pairs")
        case_id = clean(r.get("id"))
        if case_id is None:
            raise Reject("missing_field:id", "a case without an id")
        return {"source_id": f"{case_id}-{r['pair']}", "subset": "clin", "lang": "zh",
                "task": "open_qa", "question": require(pair, "question"),
                "context": require(r, "description"), "response": require(pair, "answer"),
                "meta": {"case_id": case_id, "title": clean(r.get("title")),
                         "pair": r["pair"]}}

    def exam_row(self, r: dict[str, Any]) -> dict[str, Any]:
        question = require(r, "question")
        options = _mcq.parse_options(r, "option")
        qtype = clean(r.get("question_type"))
        label = _mcq.resolve_set(options, r.get("answer"))
        if label and len(label) > 1 and qtype != MULTIPLE:
            raise Reject("answer_mismatch", f"{qtype or 'a question'} with answer {label}")
        key = normalize_key(question + "\n" + "\n".join(o["text"] for o in options))
        meta = {"exam_type": clean(r.get("exam_type")), "exam_class": clean(r.get("exam_class")),
                "exam_subject": clean(r.get("exam_subject")), "question_type": qtype,
                "subject": clean(r.get("exam_subject"))}
        if qtype == MULTIPLE:
            meta["multiple_answers"] = True
        return {**_mcq.mcq_row(clean(r.get("id")) or hashlib.sha1(key.encode()).hexdigest()[:16],
                               question, options, label,
                               rationale=clean(r.get("explanation")), meta=meta),
                "subset": "exam", "lang": "zh"}
