"""Rejected-response strategies for preference and KTO builds (DESIGN.md §4).

A strategy gets the rows to pair and the rendered chosen answers, and returns one rejected
text per row (None where it has no candidate). `rejected_by` names the strategy per row.
Strategies register by name in STRATEGIES and load only when asked for; `weak_model`
(builders/weak_model.py) samples a small model.

- distractor: for MCQ, a fluent answer that commits to a wrong option, with an
  explanation-shaped body written from templates (it never copies the true explanation);
  for yes/no, the opposite decision. Needs no model.
- cross_sample: the reference answer of another row of the same source and, where the
  source records one, the same subject.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from meddata.recipe import Recipe

from . import render

BODY = {
    "en": [
        "{text} fits this question best. The key feature described in the stem points to it "
        "directly, and the other options describe situations that do not match the findings as "
        "closely.",
        "The most appropriate choice is {text}. It is the option most consistent with the "
        "mechanism the question is testing, whereas the alternatives apply to different "
        "clinical settings.",
        "{text} is correct here because it explains the whole presentation; each of the other "
        "options accounts for only part of the picture and would leave key findings "
        "unexplained.",
    ],
    "zh": [
        "{text}最符合题意。题干中描述的关键表现直接指向该选项，其余选项与本题情况不完全相符。",
        "本题应选{text}。它与题目考查的机制最为一致，其他选项适用于不同的临床情况。",
        "{text}能够解释全部临床表现，而其他选项只能解释部分表现，会遗漏关键信息，因此选择{text}。",
    ],
}
DECISION_BODY = {
    "en": "The findings reported in the study support this conclusion directly, and the size of "
          "the effect makes chance an unlikely explanation.",
    "zh": "研究报告的结果直接支持这一结论，效应大小也使偶然因素难以解释这一结果。",
}
OPPOSITE = {"yes": ["no"], "no": ["yes"], "maybe": ["yes", "no"]}


def seeded(seed: int, *parts: str) -> int:
    """A deterministic 64-bit number from a seed and strings (no Python hash randomization)."""
    digest = hashlib.blake2b("\x1f".join((str(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass
class NoRejected:
    """A strategy's answer when it has no rejected text for a row, with the drop reason."""

    reason: str = "no_rejected_candidate"


class Strategy:
    name = ""

    def __init__(self, recipe: Recipe, store=None, progress: bool = False):
        self.recipe, self.store, self.progress = recipe, store, progress

    def label(self) -> str:
        return self.name

    def applies(self, row: dict[str, Any]) -> bool:
        return True

    def rejected(self, rows: list[dict[str, Any]], chosen: list[str]
                 ) -> list[str | NoRejected | None]:
        """One rejected text per row; None or NoRejected(reason) where there is none."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        return {}


class Distractor(Strategy):
    name = "distractor"

    def applies(self, row: dict[str, Any]) -> bool:
        return row["task"] in ("mcq", "yes_no")

    def one(self, row: dict[str, Any]) -> str | None:
        seed, lang = self.recipe.seed, row.get("lang") or "en"
        h = seeded(seed, "distractor", row["id"])
        if row["task"] == "mcq":
            wrong = [o for o in row["options"] if o["label"] != row["answer_label"]]
            if not wrong or not row.get("answer_label"):
                return None
            pick = wrong[h % len(wrong)]
            line = render.answer_line(row, label=pick["label"], text=pick["text"])
            templates = BODY.get(lang, BODY["en"])
            body = templates[(h >> 8) % len(templates)].format(text=pick["text"])
        elif row["task"] == "yes_no":
            choices = OPPOSITE.get(row.get("answer") or "", [])
            if not choices:
                return None
            line = render.answer_line(row, text=choices[h % len(choices)])
            body = DECISION_BODY.get(lang, DECISION_BODY["en"])
        else:
            return None
        return render.compose(line, body, self.recipe.reasoning, after=True)

    def rejected(self, rows, chosen):
        return [self.one(r) for r in rows]


class CrossSample(Strategy):
    name = "cross_sample"

    def rejected(self, rows, chosen):
        by_subject: dict[tuple[str, str], list[int]] = defaultdict(list)
        by_source: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            subject = json.loads(row.get("meta") or "{}").get("subject")
            if subject:
                by_subject[(row["source"], subject)].append(i)
            by_source[row["source"]].append(i)
        seed = self.recipe.seed

        def ordered(idx: list[int]) -> list[int]:
            return sorted(idx, key=lambda i: seeded(seed, "cross", rows[i]["id"]))

        next_in: dict[int, int] = {}
        for groups in (by_source, by_subject):  # subject groups override source groups
            for idx in groups.values():
                if len(idx) < 2:
                    continue
                order = ordered(idx)
                for pos, i in enumerate(order):
                    next_in[i] = order[(pos + 1) % len(order)]
        return [chosen[next_in[i]] if i in next_in else None for i in range(len(rows))]


STRATEGIES: dict[str, str] = {
    "distractor": "meddata.builders.rejected:Distractor",
    "cross_sample": "meddata.builders.rejected:CrossSample",
    "weak_model": "meddata.builders.weak_model:WeakModel",
}


def strategy(name: str, recipe: Recipe, store=None, progress: bool = False) -> Strategy:
    try:
        module, _, cls = STRATEGIES[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown rejected strategy {name!r}; known: "
                         f"{', '.join(sorted(STRATEGIES))}") from None
    return getattr(importlib.import_module(module), cls)(recipe, store=store, progress=progress)
