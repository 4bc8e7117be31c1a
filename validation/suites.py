"""Great Expectations suites over checkable columns derived in polars.

Row-level rules that are not a single built-in expectation (messages that alternate
correctly, an answer label among the option labels, chosen != rejected, lang consistent
with the script) are first computed as boolean or numeric columns with polars expressions
over each batch of a version (without loading the texts into Python); Great Expectations
then evaluates one expectation per rule on the derived columns, with the row `id` as the
index column, so every failure comes with example ids.

Each output kind declares its suite in its own module (builders/<kind>.py, `rules`), built
from the helpers here; the canonical suite is here. Each rule has a meddata name, used in
reports and in the tests. A rule's `scope` says how it sees the rows: `row` rules run on
the rows batch by batch, `unique` on a column the checker fills from a set of id hashes
kept over all batches, `distinct` on the distinct values of a column over all batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from meddata.schema import LANGS, TASKS
from meddata.text import ZH_RATIO, cjk_ratio_expr

ROLE_PATTERN = r"^(?:system,)?(?:user,assistant,)*user,assistant$"
PROMPT_PATTERN = r"^(?:system,)?(?:user,assistant,)*user$"


@dataclass
class Bounds:
    min_chars: int = 1
    max_chars: int = 100_000
    max_tokens: int | None = None
    # identifiers the de-identification detector may still find in a canonical version;
    # None: check de-identified versions (a `deidentify` stage) only, allowing 0
    max_identifiers: int | None = None
    columns: frozenset[str] = frozenset()  # the rows' columns (a kind may check what they carry)


@dataclass
class Rule:
    name: str
    expectation: str                 # a great_expectations.expectations class name
    kwargs: dict[str, Any]
    derive: dict[str, pl.Expr]       # derived columns this rule reads
    description: str = ""
    scope: str = "row"               # row | unique | distinct


def _roles(col: str) -> pl.Expr:
    return pl.col(col).list.eval(pl.element().struct.field("role")).list.join(",")


def _contents_ok(col: str) -> pl.Expr:
    return pl.col(col).list.eval(
        pl.element().struct.field("content").str.strip_chars().str.len_chars() > 0
    ).list.all().fill_null(False)


CONVERSATION_COLUMNS = ("messages", "prompt", "chosen", "rejected", "completion")


def _text_len(cols: list[str]) -> pl.Expr:
    """Characters of a text column or of every message content in a conversation column."""
    parts = []
    for c in cols:
        parts.append(pl.col(c).list.eval(pl.element().struct.field("content").str.len_chars())
                     .list.sum() if c in CONVERSATION_COLUMNS else pl.col(c).str.len_chars())
    return pl.sum_horizontal(parts).fill_null(0)


def messages_text(col: str, roles: tuple[str, ...] | None = None) -> pl.Expr:
    """The contents of a conversation column joined (only the turns of `roles`, if given)."""
    turns = pl.element().struct
    picked = pl.col(col).list.eval(pl.when(turns.field("role").is_in(list(roles))).then(
        turns.field("content")).drop_nulls()) if roles else \
        pl.col(col).list.eval(turns.field("content"))
    return picked.list.join("\n")


def unique_ids() -> Rule:
    return Rule("unique_ids", "ExpectColumnValuesToBeInSet",
                {"column": "id_unique", "value_set": [True]}, {},
                "every id appears once (over all batches)", scope="unique")


def lang(text: pl.Expr) -> list[Rule]:
    ratio = cjk_ratio_expr(text)
    ok = pl.when(pl.col("lang") == "zh").then(ratio >= ZH_RATIO).otherwise(ratio < ZH_RATIO)
    return [
        Rule("lang_known", "ExpectColumnValuesToBeInSet",
             {"column": "lang", "value_set": list(LANGS)}, {"lang": pl.col("lang")}),
        Rule("lang_matches_script", "ExpectColumnValuesToBeInSet",
             {"column": "lang_script_ok", "value_set": [True]}, {"lang_script_ok": ok},
             "a row marked zh is mostly CJK, a row marked en is not"),
    ]


def length(name: str, cols: list[str], b: Bounds) -> Rule:
    return Rule(name, "ExpectColumnValuesToBeBetween",
                {"column": f"{name}_chars", "min_value": b.min_chars, "max_value": b.max_chars},
                {f"{name}_chars": _text_len(cols)}, f"characters within [{b.min_chars}, "
                                                    f"{b.max_chars}]")


def conversation(name: str, col: str, pattern: str) -> list[Rule]:
    return [
        Rule(f"{name}_roles", "ExpectColumnValuesToMatchRegex",
             {"column": f"{name}_roles", "regex": pattern},
             {f"{name}_roles": _roles(col).fill_null("")},
             "optional system first, then user and assistant alternating"),
        Rule(f"{name}_contents_non_empty", "ExpectColumnValuesToBeInSet",
             {"column": f"{name}_contents_ok", "value_set": [True]},
             {f"{name}_contents_ok": _contents_ok(col)}),
    ]


def mcq(options: str = "options") -> list[Rule]:
    labels = pl.col(options).list.eval(pl.element().struct.field("label"))
    n = pl.col(options).list.len()
    # every letter of the answer among the labels (several for multiple-answer questions)
    in_options = pl.when(pl.col("task") != "mcq").then(True).when(
        pl.col("answer_label").is_null()).then(True).otherwise(
        pl.col("answer_label").str.split("").list.set_difference(labels).list.len() == 0)
    contiguous = pl.when(n == 0).then(pl.col("task") != "mcq").otherwise(
        labels.list.join("") == pl.lit("ABCDEFGHIJKLMNOPQRSTUVWXYZ").str.slice(0, n))
    return [
        Rule("mcq_answer_in_options", "ExpectColumnValuesToBeInSet",
             {"column": "answer_in_options", "value_set": [True]},
             {"answer_in_options": in_options.fill_null(False)},
             "an MCQ answer_label (each of its letters) is an option label"),
        Rule("mcq_option_labels_contiguous", "ExpectColumnValuesToBeInSet",
             {"column": "labels_contiguous", "value_set": [True]},
             {"labels_contiguous": contiguous.fill_null(False)},
             "MCQ option labels run A, B, C, ... and only MCQ rows have options"),
    ]


def dialogue_turns() -> Rule:
    """A multi-turn row's turns: optional system, user and assistant alternating, ending
    with the assistant (rows without turns pass)."""
    roles = _roles("turns").fill_null("")
    ok = (roles == "") | roles.str.contains(ROLE_PATTERN)
    return Rule("turns_roles", "ExpectColumnValuesToBeInSet",
                {"column": "turns_ok", "value_set": [True]}, {"turns_ok": ok},
                "turns alternate user/assistant and end with the assistant")


def canonical(bounds: Bounds) -> list[Rule]:
    present = pl.when(pl.col("task") == "document").then(
        pl.col("context").str.strip_chars().str.len_chars() > 0).otherwise(
        pl.col("question").str.strip_chars().str.len_chars() > 0).fill_null(False)
    return [
        Rule("text_present", "ExpectColumnValuesToBeInSet",
             {"column": "text_present", "value_set": [True]}, {"text_present": present},
             "question (or a document's body) is present and non-empty"),
        Rule("task_known", "ExpectColumnValuesToBeInSet",
             {"column": "task", "value_set": list(TASKS)}, {"task": pl.col("task")}),
        length("text_length", ["question", "context", "response"], bounds),
        *mcq(),
        dialogue_turns(),
        *lang(pl.concat_str([pl.col("question"), pl.col("context"), pl.col("response")],
                            separator=" ", ignore_nulls=True)),
    ]


def rules(kind: str, bounds: Bounds, contaminated: list[str] | None = None,
          token_column: bool = False) -> list[Rule]:
    """The suite for `kind` as rules (name, expectation, derived columns): the canonical
    suite, or the one the kind's module declares."""
    out = [unique_ids()]
    if kind == "canonical":
        out += canonical(bounds)
    else:
        from meddata.builders import registry

        try:
            out += registry.get(kind).rules(bounds)
        except KeyError:
            raise ValueError(f"no validation suite for kind {kind!r}") from None
    if token_column and bounds.max_tokens:
        out.append(Rule("token_length", "ExpectColumnValuesToBeBetween",
                        {"column": "tokens", "min_value": 1, "max_value": bounds.max_tokens},
                        {}, f"tokens <= {bounds.max_tokens} with the manifest's tokenizer"))
    if contaminated:
        out.append(Rule("not_contaminated", "ExpectColumnValuesToNotBeInSet",
                        {"column": "id", "value_set": contaminated}, {},
                        "no id the decontamination report lists"))
    return out
