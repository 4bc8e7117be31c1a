"""The step contract and the kind registry: a kind declared from a test alone builds end
to end (CLI, recipe, validation, conservation), steps check their columns, and two-pass
steps see the same rows on both passes whether their input is replayed or spilled."""

from __future__ import annotations

import json
from functools import partial

import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

from meddata.builders import registry
from meddata.builders.common import lineage, schema
from meddata.cli import cli
from meddata.engines.local import chain as run
from meddata.steps import Books, Ledger, Source, Step, StepError
from meddata.steps.length import Length
from meddata.steps.render import Render
from meddata.steps.split import Split
from meddata.validation import suites

QA = schema(("question", pa.string()), ("answer", pa.string()))


def qa_row(recipe, r):
    if r["task"] != "mcq" or not r.get("answer"):
        return "not_an_answered_mcq"
    return {**lineage(r), "question": r["question"], "answer": r["answer"]}


def qa_length(batch, measure):
    return measure.texts(pl.from_arrow(batch.column("question")))


TOY = registry.Kind(
    name="qa", description="question and answer text, a toy kind", schema=QA,
    steps=lambda recipe, ctx: [Render("qa", partial(qa_row, recipe), QA),
                               Length(TOY, ctx.measure, recipe.max_tokens),
                               Split(recipe.validation_ratio, recipe.seed)],
    length=qa_length,
    rules=lambda bounds: [suites.length("text_length", ["question", "answer"], bounds),
                          *suites.lang(pl.col("question"))],
    trains=())


@pytest.fixture
def toy():
    registry.register(TOY)
    yield TOY
    registry.unregister("qa")


def test_a_kind_registered_from_a_test_builds_end_to_end(toy, store, tmp_path):
    out = CliRunner().invoke(cli, ["--store", str(store.root), "build", "qa", "--quiet"])
    assert out.exit_code == 0, out.output
    v = store.resolve("qa/examples")
    assert v.schema.remove_metadata().equals(QA)
    rows = v.to_table().to_pylist()
    assert rows and all(r["answer"] for r in rows)
    stages = {s["stage"]: s for s in v.manifest["stages"]}
    assert list(stages) == ["select", "qa", "length", "split"]
    for s in stages.values():
        assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values())
    assert stages["qa"]["dropped"]["not_an_answered_mcq"] > 0
    assert v.manifest["validation"]["success"]
    assert [s["step"] for s in v.manifest["steps"]] == ["select", "qa", "length", "split"]
    out = CliRunner().invoke(cli, ["--store", str(store.root), "validate", "qa/examples"])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(cli, ["build", "--help"])
    assert "qa" in out.output
    out = CliRunner().invoke(cli, ["--store", str(store.root), "export", "qa/examples",
                                   "--format", "llamafactory", "--out", str(tmp_path / "lf")])
    assert out.exit_code == 1 and "no LLaMA-Factory layout" in out.output


def test_unknown_kind_is_a_clear_error(store):
    out = CliRunner().invoke(cli, ["--store", str(store.root), "build", "essays"])
    assert out.exit_code == 2 and "'essays' is not one of" in out.output


class TwoPass(Step):
    """Counts rows on the first pass, then tags each row with the total."""

    name = "two_pass"
    passes = 2

    def run(self, source: Source, books: Books):
        total = sum(b.num_rows for b in source.batches())
        for batch in source.batches():
            yield batch.append_column("total", pa.array([total] * batch.num_rows))


class DropOdd(Step):
    name = "drop_odd"
    needs = ("n",)

    def __init__(self, replayable: bool):
        self.replayable = replayable
        self.calls = 0

    def map(self, batch, books):
        self.calls += 1
        keep = pa.array([v % 2 == 0 for v in batch.column("n").to_pylist()])
        books.drop("odd", int(batch.num_rows - sum(keep.to_pylist())))
        return batch.filter(keep)


@pytest.mark.parametrize("replayable", [True, False])
def test_two_pass_steps_replay_or_spill_and_books_stay_exact(tmp_path, replayable):
    batches = [pa.RecordBatch.from_pydict({"n": list(range(i, i + 10))})
               for i in range(0, 50, 10)]
    reads = []

    def read(replay):
        reads.append(replay)
        yield from batches

    ledger = Ledger()
    drop = DropOdd(replayable)
    out = list(run(read, [drop, TwoPass()], ledger, tmp_path))
    assert [v for b in out for v in b.column("n").to_pylist()] == list(range(0, 50, 2))
    assert {v for b in out for v in b.column("total").to_pylist()} == {25}
    stages = ledger.stages()
    assert stages[0] == {"stage": "drop_odd", "rows_in": 50, "rows_out": 25,
                         "dropped": {"odd": 25}}
    assert stages[1]["rows_in"] == stages[1]["rows_out"] == 25
    # replayed: the reader and drop_odd ran twice, their books once; spilled: once each
    assert reads == ([False, True] if replayable else [False])
    assert drop.calls == (10 if replayable else 5)


def test_a_step_missing_a_column_says_which(tmp_path):
    ledger = Ledger()
    with pytest.raises(StepError, match="drop_odd needs column"):
        list(run(lambda replay: iter([pa.RecordBatch.from_pydict({"m": [1]})]),
                 [DropOdd(True)], ledger, tmp_path))


def test_dropped_rows_reach_the_rejects_with_their_reason(tmp_path):
    got = []
    ledger = Ledger(got.extend)

    class Drops(Step):
        name = "drops"

        def map(self, batch, books):
            books.drop("too_small", rows=batch.filter(pa.array([True, False])),
                       details=[{"why": "small"}])
            return batch.filter(pa.array([False, True]))

    out = list(run(lambda replay: iter([pa.RecordBatch.from_pydict(
        {"id": ["a", "b"], "source": ["s", "s"]})]), [Drops()], ledger, tmp_path))
    assert out[0].column("id").to_pylist() == ["b"]
    assert [(r["stage"], r["reason"], json.loads(r["raw"])["id"], json.loads(r["detail"]))
            for r in got] == [("drops", "too_small", "a", {"why": "small"})]
