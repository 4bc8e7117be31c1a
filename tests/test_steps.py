"""Named steps: a step registered from the tests alone runs by name in `meddata curate` and
in a recipe's `curate:` list, on the local engine and on Ray (the same version id), with
typed settings that name a misspelled key; per-worker state is built by `setup`, never
shipped; the package has no import cycle."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

import pyarrow as pa
import pytest
from click.testing import CliRunner

from meddata import canonical
from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.cli import cli
from meddata.engines import LocalEngine
from meddata.schema import CANONICAL
from meddata.steps import registry
from meddata.steps.base import Books, Step
from meddata.steps.registry import Settings, SettingsError, setting
from meddata.steps.text import edit_texts


@dataclass
class ShoutSettings(Settings):
    min_chars: int = setting(5, "drop rows whose question is shorter than this")
    suffix: str = setting("!", "added to every question")

    def check(self) -> None:
        if self.min_chars < 0:
            raise SettingsError(f"min_chars must be >= 0, got {self.min_chars}")


class Shout(Step):
    """Upper-cases every text and drops short questions (a toy step, for the tests)."""

    name = "shout"
    settings_class = ShoutSettings
    needs = ("id", "question")
    parallel = True
    replayable = True
    worker_state = ("table",)
    setups = 0  # how many times setup ran in this process

    def __init__(self, settings: ShoutSettings):
        self.settings = settings

    @classmethod
    def from_settings(cls, settings, context):
        return cls(settings)

    def setup(self) -> None:
        type(self).setups += 1
        self.table = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        short = pa.compute.less(pa.compute.utf8_length(batch.column("question")),
                                self.settings.min_chars).to_numpy(zero_copy_only=False)
        if short.any():
            books.drop("short_question", rows=batch.filter(pa.array(short)),
                       details=[{"rule": "min_chars", "value": self.settings.min_chars}]
                       * int(short.sum()))
            batch = batch.filter(pa.array(~short))
        out, changed, per_column = edit_texts(batch, lambda values: [
            v.translate(self.table) for v in values])
        for column, n in per_column.items():
            books.edit(f"upper:{column}", n)
        books.rows_changed += int(changed.sum())
        return out


def rows(n: int = 40) -> list[dict]:
    out = []
    for i in range(n):
        out.append({"id": f"toy/default/train/{i}", "source": "toy", "subset": "default",
                    "split": "train", "lang": "en", "task": "mcq",
                    "question": "why" if i % 10 == 0 else f"which drug number {i} helps",
                    "options": [{"label": "A", "text": "aspirin"},
                                {"label": "B", "text": "heparin"}],
                    "answer_label": "A", "answer": "aspirin", "meta": "{}",
                    "raw_sha1": f"{i:040d}", "turns": []})
    return out


@pytest.fixture
def shout():
    registry.register(Shout)
    yield Shout
    registry.unregister("shout")


@pytest.fixture
def toy_version(store):
    with store.publisher("canonical", "toy", CANONICAL) as pub:
        pub.write(pa.Table.from_pylist(rows(), schema=CANONICAL))
    return pub.version


def test_settings_are_typed_and_name_a_misspelled_key(shout):
    specs = registry.parse_list([{"shout": {"min_chars": 3}}, "shout"], "steps")
    assert [s.settings.min_chars for s in specs] == [3, 5]
    with pytest.raises(SettingsError, match=r"steps\[0\]\.shout: unknown key 'min_char' "
                                            r"\(did you mean 'min_chars'\?\)"):
        registry.parse_list([{"shout": {"min_char": 3}}], "steps")
    with pytest.raises(SettingsError, match=r"steps\[0\]\.shout\.min_chars: expected an "
                                            "integer"):
        registry.parse_list([{"shout": {"min_chars": "three"}}], "steps")
    with pytest.raises(SettingsError, match="min_chars must be >= 0"):
        registry.parse_list([{"shout": {"min_chars": -1}}], "steps")
    with pytest.raises(SettingsError, match="unknown step 'shuot' \\(did you mean 'shout'"):
        registry.parse_list([{"shuot": {}}], "steps")
    assert "min_chars (default 5): drop rows whose question" in registry.help_text("shout")


def test_setup_runs_in_the_worker_and_its_state_is_not_shipped(shout):
    import pickle

    step = Shout(ShoutSettings())
    step.ready()
    assert hasattr(step, "table")
    copy = pickle.loads(pickle.dumps(step))
    assert not hasattr(copy, "table")  # built again where it runs, never sent
    copy.ready()
    assert copy.table == step.table


def test_a_step_registered_in_the_tests_runs_in_curate_and_in_a_recipe(shout, store,
                                                                       toy_version, tmp_path):
    steps = tmp_path / "steps.yaml"
    steps.write_text("- shout: {min_chars: 5}\n")
    out = CliRunner().invoke(cli, ["--store", str(store.root), "curate", "canonical/toy",
                                   "--steps", str(steps), "--quiet"])
    assert out.exit_code == 0, out.output
    v = store.resolve("canonical/toy-curated")
    stage = {s["stage"]: s for s in v.manifest["stages"]}["shout"]
    assert stage["rows_in"] == 40 and stage["rows_out"] == 36
    assert stage["dropped"] == {"short_question": 4}
    assert stage["rows_changed"] == 36 and stage["edited"]["upper:question"] == 36
    assert v.manifest["recipe"] == {"curate": [{"shout": {"min_chars": 5, "suffix": "!"}}]}
    rejects = v.rejects().to_pylist()
    assert {r["reason"] for r in rejects} == {"short_question"} and len(rejects) == 4
    assert json.loads(rejects[0]["detail"]) == {"rule": "min_chars", "value": 5}
    assert all(r["question"].isupper() for r in v.to_table().to_pylist())
    assert "rows changed" in out.output and "upper:question: 36" in out.output
    from meddata import report

    page = report.render(v, store)
    steps = page[page.index("<section id='steps'>"):]
    assert "<td>shout</td>" in steps and "upper:question: 36" in steps \
        and "short_question: 4" in steps
    # the same list in a recipe runs before the kind's steps, with the same result
    recipe = recipe_mod.from_dict({"kind": "sft", "sources": [{"ref": "canonical/toy"}],
                                   "curate": [{"shout": {"min_chars": 5}}]})
    built = pipeline.build("sft", recipe, store, name="toy", progress=False, report=False)
    stages = [s["stage"] for s in built.manifest["stages"]]
    assert stages[:2] == ["select", "shout"] and built.rows == 36
    assert built.manifest["recipe"]["curate"] == [{"shout": {"min_chars": 5, "suffix": "!"}}]
    bad = tmp_path / "bad.yaml"
    bad.write_text("- shout: {min_char: 5}\n")
    out = CliRunner().invoke(cli, ["--store", str(store.root), "curate", "canonical/toy",
                                   "--steps", str(bad)])
    assert out.exit_code == 1
    assert "unknown key 'min_char' (did you mean 'min_chars'?)" in out.stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not "
                                                                    "installed")
def test_a_registered_step_gives_the_same_version_on_ray(shout, store, toy_version):
    import sys

    import ray

    from meddata.engines.ray import RayEngine

    # the toy step lives in this test module, which Ray's workers cannot import: ship it
    # by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        local = canonical.curate(store, "canonical/toy", [{"shout": {}}], name="local",
                                 engine=LocalEngine())
        on_ray = canonical.curate(store, "canonical/toy", [{"shout": {}}], name="ray",
                                  engine=RayEngine())
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert local.id == on_ray.id
    assert local.manifest["stages"] == on_ray.manifest["stages"]
    assert sorted(r["raw"] for r in local.rejects().to_pylist()) == \
        sorted(r["raw"] for r in on_ray.rejects().to_pylist())


def test_step_errors_are_one_line(store, toy_version, tmp_path, monkeypatch):
    """A step that cannot run (a de-identification salt not set) and a store that is not
    there: one line each, exit 1, no traceback."""
    monkeypatch.delenv("MEDDATA_DEID_SALT", raising=False)
    steps = tmp_path / "steps.yaml"
    steps.write_text("- deidentify: {mode: pseudonym}\n")
    out = CliRunner().invoke(cli, ["--store", str(store.root), "curate", "canonical/toy",
                                   "--steps", str(steps), "--quiet"])
    assert out.exit_code == 1
    assert out.stderr.strip().count("\n") == 0 and "MEDDATA_DEID_SALT is not set" in out.stderr
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "nowhere"), "fsck"])
    assert out.exit_code == 1 and out.stderr.strip() == (
        f"error: no store at {tmp_path / 'nowhere'} (give --store PATH or set MEDDATA_STORE)")


def test_a_version_with_no_rows_is_published_with_a_warning(shout, store, toy_version, tmp_path):
    steps = tmp_path / "steps.yaml"
    steps.write_text("- shout: {min_chars: 1000}\n")  # every question is shorter
    out = CliRunner().invoke(cli, ["--store", str(store.root), "curate", "canonical/toy",
                                   "--steps", str(steps), "--quiet"])
    assert out.exit_code == 0, out.output
    assert "has no rows: every input row was dropped or rejected" in out.stderr
    assert store.resolve("canonical/toy-curated").rows == 0
