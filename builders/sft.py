"""sft: `messages` = [system?, user prompt, assistant reference answer] (SFTTrainer)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from meddata.recipe import Recipe
from meddata.schema import KINDS

from . import render
from .common import answerable, lineage

SCHEMA = KINDS["sft"]


def build(rows: list[dict[str, Any]], recipe: Recipe, **context: Any
          ) -> tuple[list[dict[str, Any]], Counter]:
    kept, answers, dropped = answerable(rows, recipe.reasoning)
    out = [{**lineage(row),
            "messages": render.messages(render.prompt_text(row, recipe.prompt_style), answer,
                                        recipe.system_prompt)}
           for row, answer in zip(kept, answers)]
    return out, dropped
