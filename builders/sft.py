"""sft: `messages` = [system?, user prompt, assistant reference answer] (SFTTrainer)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from meddata.recipe import Recipe
from meddata.schema import KINDS

from . import render
from .common import lineage

SCHEMA = KINDS["sft"]


def build(rows: list[dict[str, Any]], recipe: Recipe, **context: Any
          ) -> tuple[list[dict[str, Any]], Counter]:
    out, dropped = [], Counter()
    for row in rows:
        if row["task"] == "document":
            dropped["task_not_applicable"] += 1
            continue
        answer = render.chosen_text(row, recipe.reasoning)
        if not answer:
            dropped["no_answer"] += 1
            continue
        prompt = render.prompt_text(row, recipe.prompt_style)
        out.append({**lineage(row),
                    "messages": render.messages(prompt, answer, recipe.system_prompt)})
    return out, dropped
