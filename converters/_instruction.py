"""Shared row shape for instruction-style sources (alpaca and query/response records)."""

from __future__ import annotations

from typing import Any

from meddata.convert import as_record, require
from meddata.readers import RawRecord
from meddata.text import clean


def instruction_row(rec: RawRecord, questions: tuple[str, ...], responses: tuple[str, ...],
                    inputs: tuple[str, ...] = ("input",), task: str = "instruction",
                    ) -> dict[str, Any]:
    r = as_record(rec)
    question = require(r, *questions)
    response = require(r, *responses)
    context = next((clean(r.get(k)) for k in inputs if clean(r.get(k))), None)
    used = set(questions) | set(responses) | set(inputs) | {"id"}
    return {
        "source_id": clean(r.get("id")),
        "task": task,
        "question": question,
        "context": context,
        "response": response,
        "meta": {k: v for k, v in r.items() if k not in used},
    }
