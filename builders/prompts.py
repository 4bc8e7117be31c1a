"""prompts: a conversational `prompt` plus `answer`, `answer_label` and `options`, for the
reward functions of GRPOTrainer (GRPO/GSPO) and RLOOTrainer (the rlhf stage).

LLaMA-Factory's ppo stage reads a plain sft dataset: the export writes alpaca records
(instruction = the prompt, output = the answer).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import polars as pl
import pyarrow as pa

from meddata.schema import MESSAGES, OPTIONS
from meddata.steps.length import Length
from meddata.steps.render import Render
from meddata.steps.split import Split
from meddata.validation import suites

from . import render
from .common import lineage, schema, split_system, with_system
from .registry import Kind

SCHEMA = schema(("prompt", MESSAGES), ("answer", pa.string()), ("answer_label", pa.string()),
                ("options", OPTIONS))


def row(recipe, r: dict[str, Any]) -> dict[str, Any] | str:
    if r["task"] == "document":
        return "task_not_applicable"
    answer = r.get("answer") if r["task"] in ("mcq", "yes_no") else r.get("response")
    if not answer:
        return "no_answer"
    return {**lineage(r),
            "prompt": render.dialogue(r, recipe.system_prompt, with_answer=False)
            or render.messages(render.prompt_text(r, recipe.prompt_style),
                               system=recipe.system_prompt),
            "answer": answer, "answer_label": r.get("answer_label"),
            "options": r.get("options") or []}


def steps(recipe, ctx) -> list:
    return [Render("prompts", partial(row, recipe), SCHEMA),
            Length(KIND, ctx.measure, recipe.max_tokens),
            Split(recipe.validation_ratio, recipe.seed)]


def length(batch, measure):
    return measure.conversations(pl.from_arrow(batch.column("prompt")))


def rules(bounds) -> list:
    return [*suites.conversation("prompt", "prompt", suites.PROMPT_PATTERN),
            *suites.lang(suites.messages_text("prompt", ("user", "assistant"))),
            suites.Rule("answer_present", "ExpectColumnValuesToNotBeNull",
                        {"column": "answer"}, {"answer": pl.col("answer")}),
            *suites.mcq(),
            suites.length("text_length", ["prompt"], bounds)]


def llamafactory_record(r: dict[str, Any], layout: str) -> dict[str, Any]:
    system, prompt = split_system(r["prompt"])
    return with_system({"instruction": prompt[-1]["content"], "input": "",
                        "output": r["answer"]}, system)


def llamafactory_entry(file_name: str, layout: str, has_system: bool) -> dict[str, Any]:
    cols = {"prompt": "instruction", "query": "input", "response": "output"}
    return {"file_name": file_name,
            "columns": {**cols, **({"system": "system"} if has_system else {})}}


KIND = Kind(name="prompts", description=__doc__.splitlines()[0], schema=SCHEMA, steps=steps,
            length=length, rules=rules, llamafactory_record=llamafactory_record,
            llamafactory_entry=llamafactory_entry, trains=("grpo", "rlhf"))
