from __future__ import annotations

import copy
import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from conftest import schemas
from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.cli import cli
from meddata.validation.run import validate


def conv(*turns):
    return [{"role": r, "content": c} for r, c in turns]


def lineage(i, lang="en", task="mcq"):
    return {"id": f"r{i}", "source": "medqa", "lang": lang, "task": task, "split": "train"}


GOOD = {
    "sft": [{**lineage(i), "messages": conv(("user", f"Question {i}?"),
                                            ("assistant", f"The answer is A {i}."))}
            for i in range(4)],
    "preference": [{**lineage(i), "prompt": conv(("user", f"Question {i}?")),
                    "chosen": conv(("assistant", "The answer is A.")),
                    "rejected": conv(("assistant", "The answer is B.")),
                    "rejected_by": "distractor"} for i in range(4)],
    "kto": [{**lineage(i), "prompt": conv(("user", f"Question {i}?")),
             "completion": conv(("assistant", "Answer.")), "label": i % 2 == 0,
             "rejected_by": None if i % 2 == 0 else "distractor"} for i in range(4)],
    "prompts": [{**lineage(i), "prompt": conv(("system", "Be brief."), ("user", f"Q {i}?")),
                 "answer": "alpha", "answer_label": "A",
                 "options": [{"label": "A", "text": "alpha"}, {"label": "B", "text": "beta"}]}
                for i in range(4)],
    "pretrain": [{**lineage(i, task="document"), "text": f"Document number {i} about aspirin."}
                 for i in range(4)],
    "canonical": [{**lineage(i), "subset": "us", "question": f"Which drug {i}?",
                   "context": None, "options": [{"label": "A", "text": "alpha"},
                                                {"label": "B", "text": "beta"}],
                   "answer_label": "B", "answer": "beta", "rationale": None, "response": None,
                   "meta": "{}", "raw_sha1": "0" * 40} for i in range(4)],
}


def publish(store, kind, rows, name="t"):
    schema = schemas()[kind]
    return store.publish(kind, name, schema, [pa.Table.from_pylist(rows, schema)])


def failed(result):
    return {c["name"]: c for c in result["checks"] if not c["success"]}


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_valid_versions_pass(store, kind):
    result = validate(publish(store, kind, GOOD[kind]))
    assert result["success"], failed(result)
    assert result["mode"] == "full" and result["rows_checked"] == 4


def _break(kind, fn):
    rows = copy.deepcopy(GOOD[kind])
    fn(rows[1])
    return rows


BREAKS = [
    ("sft", "unique_ids", lambda r: r.update(id="r0")),
    ("sft", "messages_roles", lambda r: r.update(messages=conv(("assistant", "x"),
                                                                ("user", "y")))),
    ("sft", "messages_contents_non_empty", lambda r: r["messages"][1].update(content="  ")),
    ("sft", "lang_matches_script", lambda r: r.update(lang="zh")),
    ("sft", "lang_known", lambda r: r.update(lang="fr")),
    ("preference", "chosen_differs_from_rejected",
     lambda r: r.update(rejected=copy.deepcopy(r["chosen"]))),
    ("preference", "rejected_contents_non_empty", lambda r: r["rejected"][0].update(content="")),
    ("preference", "prompt_roles", lambda r: r.update(prompt=conv(("user", "a"),
                                                                   ("assistant", "b")))),
    ("preference", "rejected_by_present", lambda r: r.update(rejected_by=None)),
    ("prompts", "mcq_answer_in_options", lambda r: r.update(answer_label="E")),
    ("prompts", "mcq_option_labels_contiguous",
     lambda r: r.update(options=[{"label": "A", "text": "a"}, {"label": "C", "text": "c"}])),
    ("prompts", "answer_present", lambda r: r.update(answer=None)),
    ("canonical", "text_present", lambda r: r.update(question="   ")),
    ("canonical", "task_known", lambda r: r.update(task="essay")),
    ("pretrain", "text_length", lambda r: r.update(text="")),
    ("kto", "completion_roles", lambda r: r.update(completion=conv(("user", "x")))),
]


@pytest.mark.parametrize("kind,check,breaker", BREAKS, ids=[b[1] for b in BREAKS])
def test_each_expectation_fails_on_a_version_built_to_break_it(store, kind, check, breaker):
    result = validate(publish(store, kind, _break(kind, breaker)))
    fails = failed(result)
    assert set(fails) == {check}, fails
    assert fails[check]["failing_rows"] >= 1
    assert "r1" in fails[check]["examples"] or (check == "unique_ids"
                                                 and "r0" in fails[check]["examples"])


def test_kto_needs_both_labels(store):
    rows = copy.deepcopy(GOOD["kto"])
    for r in rows:
        r["label"], r["rejected_by"] = True, None
    assert set(failed(validate(publish(store, "kto", rows)))) == {"label_has_both_values"}


def test_contaminated_ids_and_manifest_checks(store):
    v = publish(store, "sft", GOOD["sft"])
    with store.publisher("sft", "dirty", schemas()["sft"]) as pub:  # a decontam report lists r2
        pub.write(pa.Table.from_pylist(GOOD["sft"], schemas()["sft"]))
        pub.reject([{"stage": "decontam", "source": "medqa", "file": None, "position": None,
                     "raw": json.dumps({"id": "r2"}), "reason": "contaminated", "detail": "{}"}])
    dirty = store.resolve("sft/dirty")
    fails = failed(validate(dirty))
    assert set(fails) == {"not_contaminated"} and fails["not_contaminated"]["examples"] == ["r2"]
    shard = v.shard_paths()[0]
    shard.write_bytes(shard.read_bytes()[:-3] + b"xyz")
    fails = failed(validate(v))
    assert "shard_hashes" in fails and shard.name in fails["shard_hashes"]["examples"][0]


def test_cli_exit_codes_table_json_and_stored_results(store, tmp_path):
    good = publish(store, "sft", GOOD["sft"], name="good")
    publish(store, "sft", _break("sft", lambda r: r.update(lang="zh")), name="bad")
    runner = CliRunner()
    s = ["--store", str(store.root)]
    out = runner.invoke(cli, s + ["validate", "sft/good"])
    assert out.exit_code == 0 and "passed" in out.output
    out = runner.invoke(cli, s + ["validate", "sft/good", "sft/bad", "--json",
                                  str(tmp_path / "r.json")])
    assert out.exit_code == 1
    assert "lang_matches_script" in out.output and "r1" in out.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [d["success"] for d in data] == [True, False]
    assert len(good.validations()) == 2  # stored beside the version
    assert store.resolve("sft/good").id == good.id
    out = runner.invoke(cli, s + ["validate", "sft/good", "--sample", "2"])
    assert out.exit_code == 0 and "a sample of 2 of 4 rows" in out.output


def test_builds_validate_before_publishing(store):
    data = pipeline.examples_recipe().to_dict()
    data["system_prompt"] = "   "  # an empty system turn breaks prompt_contents_non_empty
    recipe = recipe_mod.from_dict(data)
    with pytest.raises(pipeline.ValidationFailed, match="prompt_contents_non_empty"):
        pipeline.build("preference", recipe, store, progress=False)
    assert store.versions(kind="preference") == []
    v = pipeline.build("preference", recipe, store, progress=False, allow_invalid=True)
    assert v.manifest["validation"]["allow_invalid"] is True
    assert not v.manifest["validation"]["success"]
    good = pipeline.build("preference", pipeline.examples_recipe(), store, name="ok",
                           progress=False)
    assert good.manifest["validation"]["success"]
    out = CliRunner().invoke(cli, ["--store", str(store.root), "build", "preference",
                                   "--system-prompt", "  ", "--quiet"])
    assert out.exit_code == 1 and "--allow-invalid" in out.output


@pytest.mark.parametrize("kind", ["sft", "preference", "prompts"])
def test_an_english_system_prompt_over_chinese_rows_validates(store, kind):
    """The language check reads the user and assistant turns, not the system prompt: an
    English system prompt over ShenNong's Chinese rows is right, and publishes."""
    data = pipeline.examples_recipe().to_dict()
    data["sources"] = [s for s in data["sources"] if s["source"] == "shennong"]
    assert data["sources"]
    # a paragraph, longer than the rows' Chinese: counted with them, it would make them "en"
    data["system_prompt"] = (
        "You are a careful medical assistant trained on Traditional Chinese Medicine. Answer "
        "in the user's language, explain the pattern differentiation behind each suggestion, "
        "name the classical formula and its main herbs, state when a licensed practitioner "
        "must be consulted first, and never recommend stopping a prescribed medicine. Keep "
        "answers short, concrete and safe, and say plainly when the evidence is weak.")
    v = pipeline.build(kind, recipe_mod.from_dict(data), store, progress=False)
    assert v.manifest["validation"]["success"]
    rows = v.to_table().to_pylist()
    first = rows[0]["messages" if kind == "sft" else "prompt"][0]
    assert first["role"] == "system" and first["content"].startswith("You are")
    assert all(r["lang"] == "zh" for r in rows)
