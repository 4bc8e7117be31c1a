"""preference: `prompt`, `chosen`, `rejected` as conversations plus `rejected_by`
(DPOTrainer, RewardTrainer).

The chosen answer is the reference; the rejected one comes from the recipe's strategy
(`auto`: distractor for MCQ and yes/no rows, cross_sample for the rest). A rejected that is
missing, or equal or nearly equal to the chosen (shingle Jaccard >= rejected.similarity),
drops the row with a reason.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from meddata.recipe import Recipe
from meddata.schema import KINDS
from meddata.text import near_equal

from . import render
from .common import answerable, lineage
from .rejected import NoRejected, strategy

SCHEMA = KINDS["preference"]


def strategy_name(recipe: Recipe, row: dict[str, Any]) -> str:
    if recipe.rejected.strategy != "auto":
        return recipe.rejected.strategy
    return "distractor" if row["task"] in ("mcq", "yes_no") else "cross_sample"


def build(rows: list[dict[str, Any]], recipe: Recipe, store=None, progress: bool = False,
          reports: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], Counter]:
    usable, chosen, dropped = answerable(rows, recipe.reasoning)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(usable):
        groups.setdefault(strategy_name(recipe, row), []).append(i)
    rejected: list[Any] = [None] * len(usable)
    labels: list[str] = [""] * len(usable)
    for name, idx in groups.items():
        strat = strategy(name, recipe, store=store, progress=progress)
        texts = strat.rejected([usable[i] for i in idx], [chosen[i] for i in idx])
        for i, text in zip(idx, texts):
            rejected[i], labels[i] = text, strat.label()
        if reports is not None and strat.report():
            reports.setdefault("rejected", {})[name] = strat.report()
    out = []
    for row, good, bad, by in zip(usable, chosen, rejected, labels):
        if isinstance(bad, NoRejected) or not bad:
            dropped[bad.reason if isinstance(bad, NoRejected) else "no_rejected_candidate"] += 1
            continue
        if near_equal(good, bad, recipe.rejected.similarity):
            dropped["rejected_near_chosen"] += 1
            continue
        prompt = render.messages(render.prompt_text(row, recipe.prompt_style),
                                 system=recipe.system_prompt)
        out.append({**lineage(row), "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": bad}],
                    "rejected_by": by})
    return out, dropped
