"""preference: `prompt`, `chosen`, `rejected` as conversations plus `rejected_by`, for
DPOTrainer and RewardTrainer.

The chosen answer is the reference; the rejected one comes from the recipe's strategy
(`auto`: distractor for MCQ and yes/no rows, cross_sample for the rest; builders/rejected.py).
A rejected that is missing, or equal or nearly equal to the chosen (shingle Jaccard >=
rejected.similarity), drops the row with a reason. So does a distractor or cross_sample
answer that a model could tell from the chosen by its form rather than its medicine: a
<think> block in one answer only or a different answer-line style
(`rejected_format_mismatch`), or another language (`rejected_lang_mismatch`); a weak
model's answers are what that model writes, so theirs are counted (`kept_mismatched`),
not dropped. The manifest's `rejected.check` counts the pairs checked, matched, and
dropped by each reason, with the rows no partner matched (cross_sample's
`no_matching_rejected`); the report shows it. Steps: pair, bound the length (the
longer of prompt + chosen and prompt + rejected, chat-templated), split.

Where it runs: pairing is a parallel step, so an engine pairs each batch in whichever
worker reads it, with the strategies built in that worker (a weak model loads there, once
per worker process, never on the driver). cross_sample adds a first pass: the workers'
scans leave each batch's chosen texts in a file of their own in the run's spill folder
and hand the driver compact rows (hashes and each text's place); the driver plans every
row's partner from those; the workers, pairing, read only their partners' texts back. The
pair check and the strategies' counts are merged into the driver's report.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from meddata.length import joined
from meddata.minhash import near_equal_many
from meddata.schema import MESSAGES
from meddata.steps import Books, Step
from meddata.steps.length import Length
from meddata.steps.split import Split
from meddata.validation import suites

from . import render
from .common import SHAREGPT_TAGS, answer, lineage, schema, split_system, with_system
from .registry import Kind
from .rejected import CrossSample, NoRejected, Partners, has_think, strategy

SCHEMA = schema(("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES),
                ("rejected_by", pa.string()))


def strategy_name(recipe, row: dict[str, Any]) -> str:
    if recipe.rejected.strategy != "auto":
        return recipe.rejected.strategy
    return "distractor" if row["task"] in ("mcq", "yes_no") else "cross_sample"


class Pair(Step):
    """Canonical rows -> preference pairs, the rejected text from the recipe's strategy.

    A parallel step: each batch is paired on its own, in whichever worker runs it. The
    strategies are per-worker state (`setup` builds them, so a weak model loads in each
    worker and is never shipped). When cross_sample may be used it is two-phase: `begin`
    makes a folder in the run's spill folder, `scan` leaves each batch's chosen texts there
    and returns compact rows, `plan` (on the driver) gives each row its partner's place,
    and `map` reads only the partners' texts back (rejected.CrossSample). The pair check
    and the strategies' totals go to the driver's copy through take_state/merge_state."""

    name = "preference"
    report_key = "rejected"
    parallel = True
    worker_state = ("strategies",)
    needs = ("id", "source", "lang", "task", "split", "question", "options", "answer",
             "answer_label", "rationale", "response", "meta")
    adds = tuple(SCHEMA.names)

    def __init__(self, recipe, store=None, progress: bool = False):
        self.recipe, self.store, self.progress = recipe, store, progress
        self.passes = 2 if recipe.rejected.strategy in ("auto", "cross_sample") else 1
        self.folder: Path | None = None      # where the scans leave the chosen texts
        self.partners: Partners | None = None  # cross_sample's plan
        self.check = {"pairs_checked": 0, "matched": 0, "rejected_format_mismatch": 0,
                      "rejected_lang_mismatch": 0, "no_matching_rejected": 0,
                      "kept_mismatched": 0}

    def setup(self) -> None:
        if self.recipe.rejected.strategy == "weak_model":
            self._strategy("weak_model")  # the model loads here, in each worker

    def _strategy(self, name: str, setup: bool = True):
        """This copy's strategy `name` (set up for use, unless it only keeps totals)."""
        strategies = self.__dict__.setdefault("strategies", {})
        if name not in strategies:
            strategies[name] = strategy(name, self.recipe, store=self.store,
                                        progress=self.progress)
            if setup:
                strategies[name].setup()
        return strategies[name]

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

    def begin(self, spill_dir: Path) -> None:
        self.folder = Path(spill_dir) / f"pairs-{uuid.uuid4().hex[:12]}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def scan(self, batch: pa.Table) -> pa.Table:
        usable, chosen, names = self._usable(batch.to_pylist(), None)
        pick = [i for i, n in enumerate(names) if n == "cross_sample"]
        return self._strategy("cross_sample").scan(
            [usable[i] for i in pick], [chosen[i] for i in pick], self.folder)

    def plan(self, compact: Iterator[pa.Table], spill_dir: Path) -> None:
        self.partners = CrossSample.plan(compact, self.folder or Path(spill_dir))

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        out = self._pairs(batch.to_pylist(), books)
        return pa.RecordBatch.from_pylist(out, schema=SCHEMA) if out else None

    def _pairs(self, rows: list[dict[str, Any]], books: Books) -> list[dict[str, Any]]:
        usable, chosen, names = self._usable(rows, books)
        rejected: list[Any] = [None] * len(usable)
        labels = [""] * len(usable)
        for name in dict.fromkeys(names):
            idx = [i for i, n in enumerate(names) if n == name]
            strat = self._strategy(name)
            texts = strat.lookup(self.partners, [usable[i] for i in idx]) \
                if strat.passes == 2 else strat.rejected([usable[i] for i in idx],
                                                         [chosen[i] for i in idx])
            for i, text in zip(idx, texts):
                rejected[i], labels[i] = text, strat.label()
        out, dropped = [], {}
        texts = [bad if isinstance(bad, str) else None for bad in rejected]
        near = near_equal_many(chosen, texts, self.recipe.rejected.similarity)
        for row, good, bad, by, too_near in zip(usable, chosen, rejected, labels, near):
            if isinstance(bad, NoRejected) or not bad:
                reason = bad.reason if isinstance(bad, NoRejected) else "no_rejected_candidate"
                if reason == "no_matching_rejected":
                    self.check[reason] += 1
                dropped.setdefault(reason, []).append(row)
                continue
            if too_near:
                dropped.setdefault("rejected_near_chosen", []).append(row)
                continue
            mismatch = self.mismatch(row, good, bad)
            self.check["pairs_checked"] += 1
            if mismatch and by in ("distractor", "cross_sample"):
                self.check[mismatch] += 1
                dropped.setdefault(mismatch, []).append(row)
                continue
            if mismatch:  # a model's own answer: its form is what the model writes
                self.check["kept_mismatched"] += 1
            else:
                self.check["matched"] += 1
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

    @staticmethod
    def mismatch(row: dict[str, Any], chosen: str, rejected: str) -> str | None:
        """Why a pair gives itself away by form, or None: a <think> block in one answer only,
        an answer line ("The answer is ..." / "答案是...") in one only, or two languages."""
        from meddata.text import detect_lang

        if has_think(chosen) != has_think(rejected):
            return "rejected_format_mismatch"
        if row["task"] in ("mcq", "yes_no"):
            lead = render.words(row)["answer_is"].split("{")[0]
            if (lead in chosen) != (lead in rejected):
                return "rejected_format_mismatch"
        if detect_lang(chosen) != detect_lang(rejected):
            return "rejected_lang_mismatch"
        return None

    def take_state(self) -> dict[str, Any]:
        state = {"check": self.check, "strategies": {
            name: s.take_state() for name, s in self.__dict__.get("strategies", {}).items()}}
        self.check = dict.fromkeys(self.check, 0)
        return state

    def merge_state(self, state: dict[str, Any]) -> None:
        for key, n in state["check"].items():
            self.check[key] += n
        for name, totals in state["strategies"].items():
            self._strategy(name, setup=False).merge_state(totals)

    def report(self) -> dict[str, Any]:
        out = {name: rep for name, s in self.__dict__.get("strategies", {}).items()
               if (rep := s.report())}
        return {**out, "check": dict(self.check)}


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
            llamafactory_entry=llamafactory_entry)
