"""MedMCQA -> canonical `mcq` rows.

Accepted layouts (each has a test):
- the release fields: id, question, opa..opd, cop, choice_type, exp, subject_name,
  topic_name; `cop` is 0-3 in the Hugging Face release and 1-4 in the original JSON release
  (JSON Lines, even in files named .json);
- re-layouts seen in the wild: `choices` as a list of "A. text" strings with `answer` as an
  index (Saf9933/Medpredict), and `options` {A..D} with `answer_idx` letter and `answer`
  text, `realidx` = MedMCQA id (xk-huang/medagents-benchmark).
Unanswered rows (cop/answer -1, null or missing: the test split) are kept with a null
answer. The index base is decided per file from the data (a 0 means 0-based, a value equal
to the option count means 1-based); when a file cannot decide it the conversion stops and
asks for `--cop-base`: it never guesses.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

from meddata.convert import ConversionError, Converter, Reject, as_record, require
from meddata.readers import RawRecord
from meddata.text import clean

from . import _mcq

_INDEX = re.compile(rb'"(cop|answer)"\s*:\s*(-?\d+)\s*[,}]')


def scan_indices(path: Path) -> set[int]:
    """Every integer `cop` / `answer` value in a file, read with a byte regex (no parsing)."""
    found: set[int] = set()
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        for line in f:
            for m in _INDEX.finditer(line):
                found.add(int(m.group(2)))
    return found


def decide_base(values: set[int], n_options: int = 4) -> int | None:
    answered = {v for v in values if v >= 0}
    if not answered:
        return None
    if 0 in answered and n_options in answered:
        raise ValueError(f"both 0 and {n_options} occur as answers")
    if 0 in answered:
        return 0
    if n_options in answered or max(answered) > n_options:
        return 1
    raise ValueError("only values 1..3 occur, which fit both 0- and 1-based answers")


class MedMCQA(Converter):
    source = "medmcqa"
    default_subset = "default"
    options = {"cop_base": "0 or 1: the base of `cop` / `answer` indices, when a file cannot "
                           "decide it itself"}

    def prepare(self, files: list[Path]) -> list[Path]:
        self.base: dict[str, int | None] = {}
        forced = self.opts.get("cop_base")
        if forced is not None and int(forced) not in (0, 1):
            raise ConversionError("--cop-base must be 0 or 1")
        for f in files:
            if forced is not None:
                self.base[str(f)] = int(forced)
                continue
            try:
                self.base[str(f)] = decide_base(scan_indices(f))
            except ValueError as e:
                raise ConversionError(
                    f"medmcqa: cannot tell whether answer indices in {f} are 0- or 1-based "
                    f"({e}); rerun with --cop-base 0 (Hugging Face release) or --cop-base 1 "
                    "(original JSON release)") from None
        return files

    def _base(self, rec: RawRecord) -> int:
        forced = self.opts.get("cop_base")
        if rec.file.startswith("hf://"):  # the Hugging Face release is 0-based
            return 0 if forced is None else int(forced)
        base = getattr(self, "base", {}).get(rec.file)
        if base is None:  # prepare() found no answered row, yet this one has an index
            raise Reject("unknown_index_base", "answer index in a file without a decided base")
        return base

    def row(self, rec: RawRecord) -> dict[str, Any]:
        r = as_record(rec)
        question = require(r, "question")
        if r.get("choices") is not None:
            options = _mcq.parse_options(r, "choices")
        else:
            options = _mcq.parse_options(r)
        label = None
        raw_index = r.get("cop", r.get("answer") if r.get("choices") is not None else None)
        if "cop" in r or r.get("choices") is not None:
            index = _mcq.index_value(raw_index)
            if raw_index is not None and index is None and clean(raw_index) is not None:
                label = _mcq.resolve(options, letter=raw_index)  # a letter or a text answer
            elif index is not None and index >= 0:
                label = _mcq.answer_from_index(index, self._base(rec), options)
        else:
            label = _mcq.resolve(options, letter=r.get("answer_idx"), text=r.get("answer"))
        source_id = clean(r.get("id")) or clean(r.get("realidx"))
        return {
            "source_id": source_id,
            "task": "mcq",
            "question": question,
            "options": options,
            "answer_label": label,
            "answer": _mcq.option_text(label, options),
            "rationale": clean(r.get("exp")),
            "meta": {"subject": clean(r.get("subject_name")), "topic": clean(r.get("topic_name")),
                     "choice_type": clean(r.get("choice_type"))},
        }
