"""Rejected-response strategies for preference and KTO builds.

A strategy gets the rows to pair and the rendered chosen answers, and returns one rejected
text per row (None where it has no candidate). `rejected_by` names the strategy per row.
Strategies register by name in STRATEGIES and load only when asked for; `weak_model`
(builders/weak_model.py) samples a small model.

- distractor: for MCQ, a fluent answer that commits to a wrong option (for a question with
  several correct options, a wrong set: one option flipped in or out), with an
  explanation-shaped body written from templates (it never copies the true explanation);
  for yes/no, the opposite decision. Needs no model.
- cross_sample: the reference answer of another row of the same source, language, task and
  answer format (a <think> block or not) and, where the source records one, the same
  subject (two phases over the stream; see CrossSample). A row with no such partner is
  dropped as `no_matching_rejected`.
The rejected answer always has the chosen answer's format and language: the preference
builder checks every pair and drops one that differs (builders/preference.py).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddata.recipe import Recipe
from meddata.steps import DUCKDB_MEMORY, seeded, seeded_array

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
    "en": ["The findings reported in the study support this conclusion directly, and the size "
           "of the effect makes chance an unlikely explanation.",
           "The study's design and its main outcome point the same way, and the secondary "
           "results are consistent with this answer."],
    "zh": ["研究报告的结果直接支持这一结论，效应大小也使偶然因素难以解释这一结果。",
           "研究设计与主要结局指向同一结论，次要结果也与这一答案一致。"],
}
OPPOSITE = {"yes": ["no"], "no": ["yes"], "maybe": ["yes", "no"]}


@dataclass
class NoRejected:
    """A strategy's answer when it has no rejected text for a row, with the drop reason."""

    reason: str = "no_rejected_candidate"


class Strategy:
    name = ""
    passes = 1  # 2: needs every row first (add, finish, take) instead of `rejected`

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
            gold = row.get("answer_label") or ""
            if not gold:
                return None
            if len(gold) > 1:  # several correct options: a wrong set (one option flipped)
                flip = row["options"][h % len(row["options"])]["label"]
                letters = "".join(sorted(set(gold) ^ {flip}))
                picked = [o for o in row["options"] if o["label"] in letters]
                label, text = letters, "; ".join(o["text"] for o in picked)
            else:
                wrong = [o for o in row["options"] if o["label"] != gold]
                if not wrong:
                    return None
                pick = wrong[h % len(wrong)]
                label, text = pick["label"], pick["text"]
            line = render.answer_line(row, label=label, text=text)
            bodies = [t.format(text=text) for t in BODY.get(lang, BODY["en"])]
        elif row["task"] == "yes_no":
            choices = OPPOSITE.get(row.get("answer") or "", [])
            if not choices:
                return None
            line = render.answer_line(row, text=choices[h % len(choices)])
            bodies = DECISION_BODY.get(lang, DECISION_BODY["en"])
        else:
            return None
        return self.shaped(row, line, bodies, h >> 8)

    def shaped(self, row: dict[str, Any], line: str, bodies: list[str], h: int) -> str:
        """The wrong answer in the shape of the row's chosen answer (render.chosen_text): a
        written response after the answer line only where the row has one, and an
        explanation (a <think> block, or inline) only where the chosen has its rationale;
        so format never tells the two apart."""
        first, second = bodies[h % len(bodies)], bodies[(h + 1) % len(bodies)]
        if row.get("response"):
            line, first = f"{line}\n\n{first}", second
        return render.compose(line, first if row.get("rationale") else None,
                              self.recipe.reasoning, after=True)

    def rejected(self, rows, chosen):
        return [self.one(r) for r in rows]


def has_think(text: str | None) -> bool:
    """Whether an answer opens with a <think> block."""
    return bool(text) and text.lstrip().startswith("<think>")


def group_key(row: dict[str, Any], chosen: str) -> str:
    """The group a cross_sample partner must come from: source, language, task and format."""
    return json.dumps([row["source"], row.get("lang"), row.get("task"),
                       "think" if has_think(chosen) else "plain"], ensure_ascii=False)


class CrossSample(Strategy):
    """The reference answer of another row of the same group (source, language, task and
    answer format: a <think> block or not) and subject, where the source records one and
    the subject has more rows: each group's rows are ordered by a seeded hash of their ids
    and each takes the next one's answer, cyclically. A row alone in its group has no
    partner (`no_matching_rejected`): an answer in another language or format would give
    the pair away.

    It needs every row before it can answer for any, so it works in two phases over a
    stream: `add` every batch (the rows' source, subject, hash and chosen text go to a
    Parquet spill, not to memory), `finish`, then `take` the rejected texts back in the
    same order. DuckDB computes the partners and joins their texts (window functions and a
    join that spill to disk past its memory limit)."""

    name = "cross_sample"
    passes = 2

    def __init__(self, recipe: Recipe, store=None, progress: bool = False):
        super().__init__(recipe, store=store, progress=progress)
        self._writer = None
        self._spill: Path | None = None
        self._k = 0
        self._reader = None
        self._next = 0  # the k the partner stream must give next
        self._pending: list[str | None] = []
        self.unmatched = 0  # rows with no partner of their source, language, task, format

    def add(self, rows: list[dict[str, Any]], chosen: list[str], spill_dir: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        subjects = []
        for row in rows:
            subject = json.loads(row.get("meta") or "{}").get("subject")
            subjects.append(json.dumps(subject, ensure_ascii=False) if subject else None)
        table = pa.table({
            "k": pa.array(range(self._k, self._k + len(rows)), pa.int64()),
            "source": pa.array([group_key(r, c) for r, c in zip(rows, chosen)], pa.string()),
            "subject": pa.array(subjects, pa.string()),
            "h": pa.array(seeded_array(self.recipe.seed, "cross", [r["id"] for r in rows]),
                          pa.uint64()),
            "chosen": pa.array(chosen, pa.string())})
        self._k += len(rows)
        if self._writer is None:
            self._spill = Path(spill_dir) / f"cross-{id(self)}.parquet"
            self._writer = pq.ParquetWriter(self._spill, table.schema)
        self._writer.write_table(table)

    def finish(self, spill_dir: Path, memory_limit: str = DUCKDB_MEMORY) -> None:
        import duckdb

        if self._writer is None:
            return
        self._writer.close()
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET temp_directory = ?", [str(spill_dir)])
        path = str(self._spill).replace("'", "''")
        self._reader = con.sql(f"""
            WITH r AS (SELECT * FROM read_parquet('{path}')),
            src AS (SELECT k, source, row_number() OVER w - 1 AS pos, count(*) OVER w AS n
                    FROM r WINDOW w AS (PARTITION BY source ORDER BY h, k
                    ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
            src_p AS (SELECT a.k, b.k AS pk FROM src a JOIN src b
                      ON a.source = b.source AND b.pos = (a.pos + 1) % a.n WHERE a.n >= 2),
            sub AS (SELECT k, source, subject, row_number() OVER w - 1 AS pos,
                           count(*) OVER w AS n
                    FROM r WHERE subject IS NOT NULL WINDOW w AS (PARTITION BY source, subject
                    ORDER BY h, k ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)),
            sub_p AS (SELECT a.k, b.k AS pk FROM sub a JOIN sub b ON a.source = b.source
                      AND a.subject = b.subject AND b.pos = (a.pos + 1) % a.n WHERE a.n >= 2)
            SELECT r.k, c.chosen AS rejected FROM r
            LEFT JOIN sub_p ON sub_p.k = r.k LEFT JOIN src_p ON src_p.k = r.k
            LEFT JOIN r c ON c.k = coalesce(sub_p.pk, src_p.pk)
            ORDER BY r.k""").to_arrow_reader(8192)

    def take(self, n: int) -> list[str | None]:
        """The next `n` rejected texts, in the order the rows were added."""
        while len(self._pending) < n and self._reader is not None:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                self._reader = None
                break
            ks = batch.column("k").to_numpy()
            if len(ks) and not np.array_equal(ks, np.arange(self._next, self._next + len(ks))):
                raise RuntimeError("cross_sample: the partner stream is out of order")
            self._next += len(ks)
            self._pending += batch.column("rejected").to_pylist()
        out, self._pending = self._pending[:n], self._pending[n:]
        out += [None] * (n - len(out))
        self.unmatched += sum(t is None for t in out)
        return [NoRejected("no_matching_rejected") if t is None else t for t in out]

    def report(self) -> dict[str, Any]:
        return {"unmatched": self.unmatched} if self.unmatched else {}

    def rejected(self, rows, chosen):
        """All at once, for rows in memory."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            self.add(rows, chosen, Path(tmp))
            self.finish(Path(tmp))
            return self.take(len(rows))


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
