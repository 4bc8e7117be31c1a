"""The step contract and the kind registry: a kind declared from a test alone builds end
to end (CLI, recipe, validation, conservation), steps check their columns, and two-pass
steps see the same rows on both passes whether their input is replayed or spilled."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from meddata.builders import registry
from meddata.builders.common import lineage, schema
from meddata.cli import cli
from meddata.engines.local import chain as run
from meddata.steps import Books, Ledger, Source, Step, StepError, key_hashes
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
                          *suites.lang(pl.col("question"))])


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


class Keep(Step):
    """Keeps the rows whose `n` passes `test`; drops the others with their rows."""

    needs = ("n",)
    parallel = True

    def __init__(self, name: str, test):
        self.name, self.test = name, test

    def map(self, batch, books):
        keep = pa.array([self.test(v) for v in batch.column("n").to_pylist()])
        books.drop("failed", rows=batch.filter(pc.invert(keep)))
        return batch.filter(keep)


def test_an_exchange_orders_rows_the_same_in_the_workers_and_on_the_driver(store,
                                                                            monkeypatch):
    """An exchange step between other steps: in the workers (buckets of positions, the
    steps after it run per bucket) and on the driver (a sort by position), the same rows in
    the same order, the same books and rejects."""
    from collections import Counter

    from conftest import toy_exchange_steps
    from meddata import runner
    from meddata.engines import LocalEngine, units

    nums = pa.schema([("id", pa.string()), ("n", pa.int64())])
    v = store.publish("canonical", "nums", nums, pa.table(
        {"id": [f"r{i}" for i in range(20_000)], "n": list(range(20_000))},
        schema=nums).to_batches(4096))
    monkeypatch.setattr(units, "unit_rows", lambda total: 3000)
    assert len(units.plan_units([v])) == 3

    def build(name, *more):
        by_hash, _, _ = toy_exchange_steps()
        steps = [Keep("even", lambda n: n % 2 == 0), by_hash,
                 Keep("not_three", lambda n: n % 3 != 0), *more]
        return runner.publish(store, "canonical", name, nums, runner.read_versions([v]),
                              steps, manifest={}, engine=LocalEngine())

    workers, driver = build("workers"), build("driver", toy_exchange_steps()[2])
    kept = [f"r{i}" for i in range(20_000) if i % 2 == 0 and i % 3]
    expected = [kept[i] for i in np.argsort(key_hashes(pa.array(kept)), kind="stable")]
    for version in (workers, driver):
        assert version.to_table().column("id").to_pylist() == expected
    assert len({p.name for p in workers.shard_paths()}) == 4  # 10,000 rows / 3,000
    assert workers.manifest["stages"] == driver.manifest["stages"][:3]
    assert [(s["rows_in"], s["rows_out"]) for s in workers.manifest["stages"]] == [
        (20_000, 10_000), (10_000, 10_000), (10_000, len(kept))]

    def rejects(version):
        return Counter((r["stage"], r["raw"]) for r in version.rejects().to_pylist())
    assert rejects(workers) == rejects(driver)
    assert sum(rejects(workers).values()) == 20_000 - len(kept)
