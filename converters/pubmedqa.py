"""PubMedQA -> canonical `yes_no` rows.

Accepted layouts (each has a test):
- the original release files ori_pqal.json (labeled), ori_pqaa.json (artificial) and
  ori_pqau.json (unlabeled): one JSON object keyed by PMID, each value holding QUESTION,
  CONTEXTS, LABELS, MESHES, YEAR, final_decision, LONG_ANSWER and reasoning_*_pred
  (the unlabeled file has no final_decision);
- test_ground_truth.json (PMID -> decision), given among the inputs: its labels are joined
  to the records by PMID, those records get split `test`, a record whose own decision
  disagrees is rejected, and labels with no record are counted in the manifest;
- the Hugging Face layout: pubid, question, context {contexts, labels, meshes,
  reasoning_required_pred, reasoning_free_pred}, long_answer, final_decision.
Decisions are normalized from any case and spacing ("Yes", " maybe ") to yes / no / maybe;
anything else is rejected. A missing decision is kept as a null answer in the unlabeled
subset and rejected elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meddata.convert import ConversionError, Converter, Reject, as_record, require
from meddata.readers import RawRecord, _open, base_suffix
from meddata.text import clean

from ._joined import JoinedIds

DECISIONS = ("yes", "no", "maybe")


def decision(value: Any) -> str | None:
    text = clean(value)
    if text is None:
        return None
    out = text.lower()
    if out not in DECISIONS:
        raise Reject("bad_decision", f"final_decision {text!r} is not yes/no/maybe")
    return out


def _ground_truth(path: Path) -> dict[str, str] | None:
    """The PMID -> decision map when `path` is a ground-truth file, else None."""
    if base_suffix(path) != ".json" or path.stat().st_size > 50_000_000:
        return None
    with _open(path) as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip()
        if not head.startswith("{"):
            return None
        # a ground-truth file maps keys straight to short strings
        if '"QUESTION"' in head or '"question"' in head:
            return None
        f.seek(0)
        try:
            data = json.load(f)
        except ValueError:
            return None
    if isinstance(data, dict) and data and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    return None


class PubMedQA(JoinedIds, Converter):
    source = "pubmedqa"
    license = "mit"
    license_url = "https://github.com/pubmedqa/pubmedqa/blob/master/LICENSE"
    default_subset = "labeled"
    #: fields a record of this source has (all of one group)
    signatures = (("QUESTION",), ("pubid",), ("final_decision",))

    def prepare(self, files: list[Path]) -> list[Path]:
        self.truth: dict[str, str] = {}
        self.matched: set[str] = set()
        rows = []
        for f in files:
            truth = _ground_truth(f)
            if truth is None:
                rows.append(f)
                continue
            for pmid, label in truth.items():
                norm = clean(label)
                if norm is None or norm.lower() not in DECISIONS:
                    raise ConversionError(f"pubmedqa: {f}: label {label!r} for PMID {pmid} is not yes/no/maybe")
                self.truth[pmid] = norm.lower()
        return rows

    def report(self) -> dict[str, Any]:
        if not getattr(self, "truth", None):
            return {}
        return {"ground_truth_labels": len(self.truth),
                "ground_truth_joined": len(self.matched),
                "labels_without_record": len(self.truth) - len(self.matched)}

    def infer_subset(self, file: str) -> str | None:
        name = Path(file).name.lower()
        for key, subset in (("pqaa", "artificial"), ("pqa_artificial", "artificial"),
                            ("pqau", "unlabeled"), ("pqa_unlabeled", "unlabeled"),
                            ("pqal", "labeled"), ("pqa_labeled", "labeled")):
            if key in name or key in file.lower():
                return subset
        return None

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        if "QUESTION" in r:  # original layout, keyed by PMID
            pmid = clean(rec.key) or clean(r.get("pubid"))
            question = require(r, "QUESTION")
            ctx = r.get("CONTEXTS")
            labels = r.get("LABELS")
            meshes = r.get("MESHES")
            long_answer = r.get("LONG_ANSWER")
            extra = {"year": clean(r.get("YEAR"))}
            reasoning = {k: r.get(k) for k in ("reasoning_required_pred", "reasoning_free_pred")}
        else:  # Hugging Face layout
            pmid = clean(r.get("pubid")) or clean(rec.key)
            question = require(r, "question")
            context = r.get("context")
            if context is not None and not isinstance(context, dict):
                raise Reject("wrong_type", "context is not an object")
            context = context or {}
            ctx, labels, meshes = (context.get("contexts"), context.get("labels"),
                                   context.get("meshes"))
            long_answer = r.get("long_answer")
            extra = {}
            reasoning = {k: context.get(k, r.get(k))
                         for k in ("reasoning_required_pred", "reasoning_free_pred")}
        if pmid is None:
            raise Reject("missing_field:pubid", "no PMID key or pubid")
        if isinstance(ctx, str):
            ctx = [ctx]
        if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
            raise Reject("wrong_type", "contexts are not a list of strings")
        if isinstance(labels, list) and len(labels) == len(ctx) and all(labels):
            context_text = "\n".join(f"{lab}: {c.strip()}" for lab, c in zip(labels, ctx))
        else:
            context_text = "\n".join(c.strip() for c in ctx)
        subset = self.subset_for(rec.file)
        answer = decision(r.get("final_decision"))
        split = None
        truth = getattr(self, "truth", {}).get(pmid)
        if truth is not None:
            if answer is not None and answer != truth:
                raise Reject("decision_conflict",
                             f"PMID {pmid}: record says {answer}, ground truth says {truth}")
            answer, split = truth, self.split or "test"
            self.matched.add(pmid)
        if answer is None and subset != "unlabeled":
            raise Reject("missing_field:final_decision", f"PMID {pmid} has no decision")
        return {
            "source_id": pmid,
            "subset": subset,
            "split": split,
            "lang": "en",
            "task": "yes_no",
            "question": question,
            "context": clean(context_text),
            "answer_label": answer,
            "answer": answer,
            "rationale": clean(long_answer),
            "meta": {"pmid": pmid, "meshes": meshes if isinstance(meshes, list) else None,
                     "labels": labels if isinstance(labels, list) else None,
                     **extra, **{k: clean(v) for k, v in reasoning.items()}},
        }
