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
- CMB-Exam's answer key, `CMB-test-choice-answer.json` (records of id, the exam fields,
  question_type and answer, no question), given among the inputs: its answers are joined
  to the questions (`CMB-test-choice-question-merge.json`, which have none) by id, as
  PubMedQA's ground truth is; a question whose own answer disagrees with the key is
  rejected (`answer_conflict`), and the manifest's convert_report counts the key's
  answers, those joined and those without a question.
The split comes from --split or the file name (CMB-Exam's val, test; CMB-Clin is a test
set: `test` unless the file name says otherwise).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from meddata.convert import ConversionError, Converter, Reject, as_record, require
from meddata.readers import RawRecord, Span, _open, base_suffix, read_file
from meddata.text import clean, normalize_key

from . import _mcq
from ._joined import JoinedIds

MULTIPLE, SINGLE = "多项选择题", "单项选择题"


def _answer_key(path: Path) -> dict[str, object] | None:
    """The id -> answer map when `path` is a CMB-Exam answer key (a JSON array, or JSON
    Lines, of records with an id and an answer and no question or options: id, the exam
    fields, question_type, answer), else None."""
    if base_suffix(path) not in (".json", ".jsonl") or path.stat().st_size > 50_000_000:
        return None
    with _open(path) as f:
        head = f.read(4096).decode("utf-8", errors="replace")
        if '"question"' in head or '"QA_pairs"' in head or '"answer"' not in head:
            return None
        f.seek(0)
        try:
            text = f.read().decode("utf-8")
            data = json.loads(text) if text.lstrip().startswith("[") else \
                [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError:
            return None
    if not isinstance(data, list) or not data or not all(
            isinstance(r, dict) and "id" in r and "answer" in r and "question" not in r
            and "option" not in r and "QA_pairs" not in r for r in data):
        return None
    key: dict[str, object] = {}
    for r in data:
        rid = clean(r["id"])
        if rid is None:
            raise ConversionError(f"cmb: {path}: an answer-key record without an id")
        if rid in key and key[rid] != r["answer"]:
            raise ConversionError(f"cmb: {path}: id {rid} has two different answers")
        key[rid] = r["answer"]
    return key


class CMB(JoinedIds, Converter):
    source = "cmb"
    license = "apache-2.0"
    license_url = "https://github.com/FreedomIntelligence/CMB/blob/main/LICENSE"
    default_subset = "exam"
    #: fields a record of this source has (all of one group)
    signatures = (("question", "option"), ("QA_pairs",), ("QA_pair",))

    def prepare(self, files: list[Path]) -> list[Path]:
        """Answer-key files are set aside and joined to the questions by id."""
        self.key: dict[str, object] = {}
        self.matched: set[str] = set()
        rows = []
        for f in files:
            key = _answer_key(f)
            if key is None:
                rows.append(f)
            else:
                self.key.update(key)
        if self.key and not rows:
            raise ConversionError("cmb: only an answer key was given; give the questions "
                                  "file (CMB-test-choice-question-merge.json) beside it")
        return rows

    def report(self) -> dict[str, Any]:
        if not getattr(self, "key", None):
            return {}
        return {"answer_key_labels": len(self.key),
                "answer_key_joined": len(self.matched),
                "answers_without_question": len(self.key) - len(self.matched)}

    def read(self, path: Path, span: Span | None = None):
        """CMB-Clin cases become one record per question-answer pair."""
        for rec in read_file(path, span):
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
        return self.exam_row(r, self.split_for(rec))

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

    def exam_row(self, r: dict[str, Any], split: str = "test") -> dict[str, Any]:
        question = require(r, "question")
        options = _mcq.parse_options(r, "option")
        qtype = clean(r.get("question_type"))
        label = _mcq.resolve_set(options, r.get("answer"))
        rid = clean(r.get("id"))
        if rid is not None and rid in getattr(self, "key", {}):
            keyed = _mcq.resolve_set(options, self.key[rid])
            if label is not None and keyed != label:
                raise Reject("answer_conflict",
                             f"id {rid}: the record says {label}, the answer key {keyed}")
            label = keyed
            self.matched.add(rid)
        if label is None and split != "test":
            # only CMB-Exam's test questions come without answers (their key is a file)
            raise Reject("missing_field:answer", "no answer in a labelled split")
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
