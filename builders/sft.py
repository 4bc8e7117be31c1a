"""sft: `messages` = [system?, user prompt, assistant reference answer], for SFTTrainer.

Steps: render each canonical row (documents and unanswered items are dropped with a
reason), bound its chat-templated length, split train / validation.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import polars as pl

from meddata.schema import MESSAGES
from meddata.steps.length import Length
from meddata.steps.render import Render
from meddata.steps.split import Split
from meddata.validation import suites

from . import render
from .common import SHAREGPT_TAGS, answer, lineage, schema, split_system, with_system
from .registry import Kind

SCHEMA = schema(("messages", MESSAGES))


def row(recipe, r: dict[str, Any]) -> dict[str, Any] | str:
    text, reason = answer(r, recipe.reasoning)
    if reason:
        return reason
    dialogue = render.dialogue(r, recipe.system_prompt)  # a multi-turn row: every turn
    return {**lineage(r), "messages": dialogue or render.messages(
        render.prompt_text(r, recipe.prompt_style), text, recipe.system_prompt)}


def steps(recipe, ctx) -> list:
    return [Render("sft", partial(row, recipe), SCHEMA),
            Length(KIND, ctx.measure, recipe.max_tokens),
            Split(recipe.validation_ratio, recipe.seed)]


def length(batch, measure):
    return measure.conversations(pl.from_arrow(batch.column("messages")))


def rules(bounds) -> list:
    return [*suites.conversation("messages", "messages", suites.ROLE_PATTERN),
            suites.length("text_length", ["messages"], bounds),
            *suites.lang(suites.messages_text("messages", ("user", "assistant")))]


def llamafactory_record(r: dict[str, Any], layout: str) -> dict[str, Any]:
    system, msgs = split_system(r["messages"])
    if layout == "alpaca":
        return with_system({"instruction": msgs[0]["content"], "input": "",
                            "output": msgs[-1]["content"]}, system)
    return with_system({"messages": msgs}, system)


def llamafactory_entry(file_name: str, layout: str, has_system: bool) -> dict[str, Any]:
    if layout == "alpaca":
        cols = {"prompt": "instruction", "query": "input", "response": "output"}
        return {"file_name": file_name,
                "columns": {**cols, **({"system": "system"} if has_system else {})}}
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {"messages": "messages", **({"system": "system"} if has_system else {})},
            "tags": SHAREGPT_TAGS}


KIND = Kind(name="sft", description=__doc__.splitlines()[0], schema=SCHEMA, steps=steps,
            length=length, rules=rules, llamafactory_record=llamafactory_record,
            llamafactory_entry=llamafactory_entry, trains=("sft",))
