"""prompts: a conversational `prompt` plus answer, answer_label and options, for reward
functions (GRPOTrainer for GRPO/GSPO, RLOOTrainer for the rlhf stage)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from meddata.recipe import Recipe
from meddata.schema import KINDS

from . import render
from .common import lineage

SCHEMA = KINDS["prompts"]


def build(rows: list[dict[str, Any]], recipe: Recipe, **context: Any
          ) -> tuple[list[dict[str, Any]], Counter]:
    out, dropped = [], Counter()
    for row in rows:
        if row["task"] == "document":
            dropped["task_not_applicable"] += 1
            continue
        answer = row.get("answer") if row["task"] in ("mcq", "yes_no") else row.get("response")
        if not answer:
            dropped["no_answer"] += 1
            continue
        out.append({**lineage(row),
                    "prompt": render.messages(render.prompt_text(row, recipe.prompt_style),
                                              system=recipe.system_prompt),
                    "answer": answer,
                    "answer_label": row.get("answer_label"),
                    "options": row.get("options") or []})
    return out, dropped
