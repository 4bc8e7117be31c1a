"""preference: `prompt`, `chosen`, `rejected` as conversations plus `rejected_by`, for
DPOTrainer and RewardTrainer.

The chosen answer is the reference; the rejected one comes from the recipe's strategy
(`auto`: distractor for MCQ and yes/no rows, cross_sample for the rest; builders/rejected.py).
A rejected that is missing, or equal or nearly equal to the chosen (shingle Jaccard >=
rejected.similarity), drops the row with a reason. Steps: pair, bound the length (the
longer of prompt + chosen and prompt + rejected, chat-templated), split.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa

from meddata.length import joined
from meddata.minhash import near_equal_many
from meddata.schema import MESSAGES
from meddata.steps import Books, Source, Step
from meddata.steps.length import Length
from meddata.steps.split import Split
from meddata.validation import suites

from . import render
from .common import SHAREGPT_TAGS, answer, lineage, schema, split_system, with_system
from .registry import Kind
from .rejected import NoRejected, strategy

SCHEMA = schema(("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES),
                ("rejected_by", pa.string()))


def strategy_name(recipe, row: dict[str, Any]) -> str:
    if recipe.rejected.strategy != "auto":
        return recipe.rejected.strategy
    return "distractor" if row["task"] in ("mcq", "yes_no") else "cross_sample"


class Pair(Step):
    """Canonical rows -> preference pairs, the rejected text from the recipe's strategy.
    Two passes when cross_sample may be used (it needs every row's answer first)."""

    name = "preference"
    report_key = "rejected"
    needs = ("id", "source", "lang", "task", "split", "question", "options", "answer",
             "answer_label", "rationale", "response", "meta")
    adds = tuple(SCHEMA.names)

    def __init__(self, recipe, store=None, progress: bool = False):
        self.recipe, self.store, self.progress = recipe, store, progress
        self.passes = 2 if recipe.rejected.strategy in ("auto", "cross_sample") else 1
        self.strategies: dict[str, Any] = {}

    def _strategy(self, name: str):
        if name not in self.strategies:
            self.strategies[name] = strategy(name, self.recipe, store=self.store,
                                             progress=self.progress)
        return self.strategies[name]

    def _usable(self, rows: list[dict[str, Any]], books: Books | None):
        """(rows with a reference answer, their answers, their strategy names)."""
        usable, chosen, names, dropped = [], [], [], {}
        for row in rows:
            text, reason = answer(row, self.recipe.reasoning)
            if reason:
                dropped.setdefault(reason, []).append(row)
                continue
            usable.append(row)
            chosen.append(text)
            names.append(strategy_name(self.recipe, row))
        if books is not None:
            for reason, gone in dropped.items():
                books.drop(reason, rows=gone)
        return usable, chosen, names

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        if self.passes == 2:  # cross_sample: every row's answer first, to a spill
            cross = self._strategy("cross_sample")
            for batch in source.batches():
                self.check_columns(batch)
                usable, chosen, names = self._usable(batch.to_pylist(), None)
                pick = [i for i, n in enumerate(names) if n == "cross_sample"]
                cross.add([usable[i] for i in pick], [chosen[i] for i in pick],
                          source.spill_dir)
            cross.finish(source.spill_dir)
        for batch in source.batches():
            self.check_columns(batch)
            out = self._pairs(batch.to_pylist(), books)
            if out:
                yield pa.RecordBatch.from_pylist(out, schema=SCHEMA)

    def _pairs(self, rows: list[dict[str, Any]], books: Books) -> list[dict[str, Any]]:
        usable, chosen, names = self._usable(rows, books)
        rejected: list[Any] = [None] * len(usable)
        labels = [""] * len(usable)
        for name in dict.fromkeys(names):
            idx = [i for i, n in enumerate(names) if n == name]
            strat = self._strategy(name)
            texts = strat.take(len(idx)) if strat.passes == 2 else strat.rejected(
                [usable[i] for i in idx], [chosen[i] for i in idx])
            for i, text in zip(idx, texts):
                rejected[i], labels[i] = text, strat.label()
        out, dropped = [], {}
        texts = [bad if isinstance(bad, str) else None for bad in rejected]
        near = near_equal_many(chosen, texts, self.recipe.rejected.similarity)
        for row, good, bad, by, too_near in zip(usable, chosen, rejected, labels, near):
            if isinstance(bad, NoRejected) or not bad:
                reason = bad.reason if isinstance(bad, NoRejected) else "no_rejected_candidate"
                dropped.setdefault(reason, []).append(row)
                continue
            if too_near:
                dropped.setdefault("rejected_near_chosen", []).append(row)
                continue
            prompt = render.dialogue(row, self.recipe.system_prompt, with_answer=False) or \
                render.messages(render.prompt_text(row, self.recipe.prompt_style),
                                system=self.recipe.system_prompt)
            out.append({**lineage(row), "prompt": prompt,
                        "chosen": [{"role": "assistant", "content": good}],
                        "rejected": [{"role": "assistant", "content": bad}],
                        "rejected_by": by})
        for reason, gone in dropped.items():
            books.drop(reason, rows=gone)
        return out

    def report(self) -> dict[str, Any]:
        return {name: rep for name, s in self.strategies.items() if (rep := s.report())}


def steps(recipe, ctx) -> list:
    return [Pair(recipe, ctx.store, ctx.progress),
            Length(KIND, ctx.measure, recipe.max_tokens),
            Split(recipe.validation_ratio, recipe.seed)]


def length(batch, measure):
    prompt = pl.from_arrow(batch.column("prompt"))
    both = [measure.conversations(joined(prompt, pl.from_arrow(batch.column(c))))
            for c in ("chosen", "rejected")]
    return [max(a, b) for a, b in zip(*both)]


def rules(bounds) -> list:
    return [*suites.conversation("prompt", "prompt", suites.PROMPT_PATTERN),
            *suites.lang(suites.messages_text("prompt", ("user", "assistant"))),
            *suites.conversation("chosen", "chosen", r"^assistant$"),
            *suites.conversation("rejected", "rejected", r"^assistant$"),
            suites.Rule("chosen_differs_from_rejected", "ExpectColumnValuesToBeInSet",
                        {"column": "chosen_ne_rejected", "value_set": [True]},
                        {"chosen_ne_rejected": (suites.messages_text("chosen") !=
                                                suites.messages_text("rejected")
                                                ).fill_null(False)}),
            suites.Rule("rejected_by_present", "ExpectColumnValuesToNotBeNull",
                        {"column": "rejected_by"}, {"rejected_by": pl.col("rejected_by")}),
            suites.length("text_length", ["prompt", "chosen", "rejected"], bounds)]


def llamafactory_record(r: dict[str, Any], layout: str) -> dict[str, Any]:
    system, prompt = split_system(r["prompt"])
    return with_system({"messages": prompt, "chosen": r["chosen"][-1],
                        "rejected": r["rejected"][-1]}, system)


def llamafactory_entry(file_name: str, layout: str, has_system: bool) -> dict[str, Any]:
    cols = {"messages": "messages", "chosen": "chosen", "rejected": "rejected"}
    return {"file_name": file_name, "formatting": "sharegpt", "ranking": True,
            "columns": {**cols, **({"system": "system"} if has_system else {})},
            "tags": SHAREGPT_TAGS}


KIND = Kind(name="preference", description=__doc__.splitlines()[0], schema=SCHEMA,
            steps=steps, length=length, rules=rules, llamafactory_record=llamafactory_record,
            llamafactory_entry=llamafactory_entry, trains=("dpo", "reward"))
