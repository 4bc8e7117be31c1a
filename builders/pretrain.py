"""pretrain: plain `text` for continued pretraining; with a tokenizer and `pack: true`,
packed `input_ids` too.

Documents become their title and body; QA, instruction and reasoning rows become the
rendered prompt followed by the reference answer. Packing joins the documents' token ids
with the tokenizer's EOS and cuts them into sequences of exactly `max_tokens` (the last
one may be shorter); the pipeline packs each split and language separately. Each sequence
row carries its decoded text, and its source and task list every contributing document's.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from meddata.recipe import Recipe
from meddata.schema import KINDS

from . import render
from .common import lineage

SCHEMA = KINDS["pretrain"]
PACKED_SCHEMA = KINDS["pretrain_packed"]


def document_text(row: dict[str, Any], recipe: Recipe) -> str | None:
    if row["task"] == "document":
        title, body = row.get("question"), row.get("context")
        return f"{title}\n\n{body}" if title and body else body
    answer = render.chosen_text(row, recipe.reasoning)
    if not answer:
        return None
    return f"{render.prompt_text(row, recipe.prompt_style)}\n\n{answer}"


def build(rows: list[dict[str, Any]], recipe: Recipe, **context: Any
          ) -> tuple[list[dict[str, Any]], Counter]:
    out, dropped = [], Counter()
    for row in rows:
        text = document_text(row, recipe)
        if not text:
            dropped["no_answer"] += 1
            continue
        out.append({**lineage(row), "text": text})
    return out, dropped


def pack(docs: list[dict[str, Any]], tokenizer, max_len: int) -> tuple[list[dict[str, Any]], dict]:
    """Concatenate documents (EOS between them) and cut into sequences of max_len ids."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("packing needs a tokenizer with an EOS token")
    sequences: list[dict[str, Any]] = []
    ids: list[int] = []
    members: list[dict[str, Any]] = []

    def flush(final: bool) -> None:
        nonlocal ids, members
        while len(ids) >= max_len or (final and ids):
            chunk, ids = ids[:max_len], ids[max_len:]
            n = len(sequences)
            sequences.append({
                "id": f"pack/{n:08d}",
                "source": "+".join(sorted({m["source"] for m in members})),
                "lang": "+".join(sorted({m["lang"] for m in members})),
                "task": "+".join(sorted({m["task"] for m in members})),
                "split": members[-1]["split"],
                "text": tokenizer.decode(chunk),
                "input_ids": chunk,
            })
            members = members[-1:] if ids else []
    total = 0
    for doc in docs:
        doc_ids = tokenizer(doc["text"], add_special_tokens=False)["input_ids"] + [eos]
        total += len(doc_ids)
        ids.extend(doc_ids)
        members.append(doc)
        flush(final=False)
    flush(final=True)
    return sequences, {"documents": len(docs), "sequences": len(sequences), "tokens": total,
                       "max_len": max_len}
