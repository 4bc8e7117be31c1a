"""MedQA (USMLE, Mainland China MCMLE, Taiwan) -> canonical `mcq` rows.

Accepted layouts (each has a test):
- `options` as an object {"A": ..., "E": ...} (4, 5 or more options), as a list of
  {"key", "value"} objects, or as a string holding either (JSON or a Python literal);
- the answer as an `answer_idx` letter, as `answer` text, or both, which must agree; text is
  matched to an option after normalization (case, whitespace, punctuation, full-width);
- `meta_info` and `metamap_phrases` are kept in meta;
- the HuatuoGPT-o1 verifiable-problem layout: the MedQA fields plus Question, Complex_CoT,
  Response, "Open-ended Verifiable Question" and "Ground-True Answer"; Complex_CoT becomes
  the rationale and Response the response.
Subsets: `us`, `mcmle`, `tw`, from --subset or from the path (US, Mainland, Taiwan).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from meddata.convert import Converter, Reject, as_record, require
from meddata.readers import RawRecord
from meddata.text import clean, normalize_key

from . import _mcq

_SUBSETS = {"us": "us", "usmle": "us", "mainland": "mcmle", "mcmle": "mcmle",
            "taiwan": "tw", "tw": "tw"}


class MedQA(Converter):
    source = "medqa"
    license = "mit"
    license_url = "https://github.com/jind11/MedQA/blob/master/LICENSE"
    default_subset = "us"
    #: fields a record of this source has (all of one group)
    signatures = (("question", "options"), ("Question", "options"))

    def infer_subset(self, file: str) -> str | None:
        for part in reversed(re.split(r"[\\/_.\-\s]+", file.lower())):
            if part in _SUBSETS:
                return _SUBSETS[part]
        return None

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        question = require(r, "question", "Question")
        options = _mcq.parse_options(r)
        label = _mcq.resolve(options, letter=r.get("answer_idx"), text=r.get("answer"))
        if label is None:  # every MedQA split is labelled: a record without one is no MedQA
            raise Reject("missing_field:answer", "no answer_idx or answer")
        key = normalize_key(question + "\n" + "\n".join(o["text"] for o in options))
        source_id = clean(r.get("realidx")) or clean(r.get("id")) or hashlib.sha1(
            key.encode()).hexdigest()[:16]
        meta = {"meta_info": clean(r.get("meta_info")),
                "metamap_phrases": r.get("metamap_phrases") or None}
        if r.get("Complex_CoT") is not None or r.get("Response") is not None:
            meta["open_question"] = clean(r.get("Open-ended Verifiable Question")) or clean(
                r.get("Question"))
            meta["ground_truth_answer"] = clean(r.get("Ground-True Answer"))
        return _mcq.mcq_row(source_id, question, options, label,
                            rationale=clean(r.get("Complex_CoT")),
                            response=clean(r.get("Response")), meta=meta)
