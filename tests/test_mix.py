"""Mixing: groups sampled down or repeated up to their shares by rows or by tokens, `weight`
above 1, repeats counted in the ledger and kept in their row's split, the too-small case,
and the same version on the Ray engine."""

from __future__ import annotations

import importlib.util
import json
import random
from collections import defaultdict

import pyarrow as pa
import pytest

from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.engines import LocalEngine
from meddata.schema import CANONICAL
from meddata.steps.mix import MixError, original_ids

WORDS = ("fever cough pain renal cardiac hepatic dose therapy chronic acute infection "
         "vitamin artery nerve muscle fracture lesion syndrome trial outcome").split()


def rows(prefix: str, n: int, seed: int, words: tuple[int, int] = (8, 40)) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        question = " ".join(rng.choices(WORDS, k=rng.randint(*words)))
        options = [{"label": lab, "text": f"{rng.choice(WORDS)} {lab}"} for lab in "ABCD"]
        out.append({"id": f"{prefix}/s/train/{i:05d}", "source": prefix, "subset": "s",
                    "split": "train", "task": "mcq", "lang": "en", "question": question,
                    "context": None, "options": options, "answer_label": "A",
                    "answer": options[0]["text"], "rationale": None, "response": None,
                    "meta": "{}", "raw_sha1": f"{seed:04x}{i:036x}"})
    return out


def publish(store, name: str, data: list[dict]):
    table = pa.Table.from_pylist(data, schema=CANONICAL)
    return store.publish("canonical", name, CANONICAL, table.to_batches(max_chunksize=700))


@pytest.fixture
def sources(store):
    publish(store, "med-a", rows("meda", 900, 1))
    publish(store, "med-b", rows("medb", 600, 2, (20, 60)))
    publish(store, "general", rows("gen", 500, 3, (4, 20)))
    return store


def recipe(mix=None, **more):
    data = {"name": "mixed", "sources": [{"ref": "canonical/med-a", "group": "medical"},
                                         {"ref": "canonical/med-b", "group": "medical"},
                                         {"ref": "canonical/general", "group": "general"}],
            **more}
    if mix is not None:
        data["mix"] = mix
    return recipe_mod.from_dict(data)


def build(store, r, name="mixed", engine=None):
    return pipeline.build("sft", r, store, name=name, progress=False, report=False,
                          engine=engine or LocalEngine())


def check_books(v):
    for s in v.manifest["stages"]:
        assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values()), s
    ids = v.to_table(columns=["id"])["id"].to_pylist()
    assert len(ids) == len(set(ids))  # copies have ids of their own
    return ids


def test_shares_by_rows_with_up_sampling(sources):
    v = build(sources, recipe({"by": "rows", "total": 3000,
                               "shares": {"medical": 0.4, "general": 0.6}}))
    ids = check_books(v)
    mix = v.manifest["mix"]
    assert mix["counter"].startswith("estimate") and mix["by"] == "rows"
    groups = mix["groups"]
    assert groups["general"]["rows"] + groups["medical"]["rows"] == len(ids) == 3000
    assert abs(groups["general"]["share_rows"] - 0.6) <= 0.01
    assert abs(groups["medical"]["share_rows"] - 0.4) <= 0.01
    # general (500 rows) repeated up to 1,800: every row 3 times, some 4 times
    assert groups["general"]["rows_kept"] == 500 and groups["general"]["repeats"] == 1300
    assert groups["medical"]["rows_kept"] == 1200 and groups["medical"]["repeats"] == 0
    stage = next(s for s in v.manifest["stages"] if s["stage"] == "mix")
    assert stage["rows_in"] == 2000 and stage["rows_out"] == 1700
    assert stage["dropped"] == {"mix_sampled_out": 300}
    assert stage["repeats"] == 1300 and stage["rows_emitted"] == 3000
    assert sum("#repeat-" in i for i in ids) == 1300
    card = (v.path / "README.md").read_text()
    assert "## Mix" in card and "| general | 0.600 | 1800 | 0.600 |" in card
    assert "|   med-a (medical) |" in card.replace("| med-a", "|   med-a")


def test_shares_by_tokens_without_a_total_sample_down(sources):
    v = build(sources, recipe({"by": "tokens", "shares": {"medical": 0.8, "general": 0.2}}))
    check_books(v)
    mix = v.manifest["mix"]
    groups = mix["groups"]
    assert abs(groups["medical"]["share_tokens"] - 0.8) <= 0.01
    assert abs(groups["general"]["share_tokens"] - 0.2) <= 0.01
    # without a total, the group that binds is used once, whole, and nothing repeats
    assert all(g["repeats"] == 0 for g in groups.values())
    assert groups["medical"]["rows_kept"] == 1500 or groups["general"]["rows_kept"] == 500
    assert mix["total_planned"] == pytest.approx(
        groups["medical"]["tokens"] + groups["general"]["tokens"])


def test_a_group_too_small_for_its_share(sources, tmp_path):
    publish(sources, "tiny", rows("tiny", 2, 9, (200, 200)))
    data = {"name": "short", "sources": [{"ref": "canonical/med-a", "group": "medical"},
                                         {"ref": "canonical/tiny", "group": "general"}],
            "mix": {"by": "tokens", "total": 3000, "shares": {"medical": 0.9,
                                                              "general": 0.1}}}
    with pytest.raises(MixError) as e:
        build(sources, recipe_mod.from_dict(data), "short")
    message = str(e.value)
    assert "\n" not in message and "group general has" in message
    assert "--allow-short-mix" in message and "nothing published" in message
    assert not (sources.root / "sft" / "short").exists()
    data["mix"]["allow_short"] = True
    v = build(sources, recipe_mod.from_dict(data), "short")
    assert v.manifest["mix"]["short"] == "general"
    assert "Published with --allow-short-mix: group general" in (v.path / "README.md").read_text()


def test_every_copy_of_a_row_lands_in_its_split(sources):
    r = recipe_mod.from_dict({
        "name": "w", "validation_ratio": 0.3,
        "sources": [{"ref": "canonical/general", "weight": 3.5},
                    {"ref": "canonical/med-a", "weight": 0.5}]})
    v = build(sources, r, "weighted")
    check_books(v)
    table = v.to_table(columns=["id", "split"])
    splits = defaultdict(set)
    copies = defaultdict(int)
    for i, orig, split in zip(table["id"].to_pylist(),
                              original_ids(table["id"]).to_pylist(), table["split"].to_pylist()):
        assert i == orig or i.startswith(orig + "#repeat-")
        splits[orig].add(split)
        copies[orig] += 1
    assert all(len(s) == 1 for s in splits.values())
    assert {"train", "validation"} == set().union(*splits.values())
    general = [n for i, n in copies.items() if i.startswith("gen/")]
    assert len(general) == 500 and set(general) == {3, 4}  # weight 3.5
    assert 200 <= sum(n == 4 for n in general) <= 300
    med = [n for i, n in copies.items() if i.startswith("meda/")]
    assert set(med) == {1} and 350 <= len(med) <= 550  # weight 0.5: sampled by select
    stage = next(s for s in v.manifest["stages"] if s["stage"] == "mix")
    assert stage["repeats"] == sum(n - 1 for n in copies.values())


def test_repeats_come_after_dedup_and_decontam(sources):
    """Mixing runs after dedup and decontam, so dedup never meets a repeat of a row."""
    publish(sources, "bench", [dict(r, id="bench/" + r["id"]) for r in rows("gen", 10, 3,
                                                                          (4, 20))])
    v = build(sources, recipe({"by": "rows", "total": 3000,
                               "shares": {"medical": 0.5, "general": 0.5}},
                              dedup={}, decontam={"against": ["canonical/bench"]}), "clean")
    check_books(v)
    stages = [s["stage"] for s in v.manifest["stages"]]
    assert stages.index("dedup") < stages.index("decontam") < stages.index("mix")
    stage = {s["stage"]: s for s in v.manifest["stages"]}
    assert stage["decontam"]["dropped"]["contaminated"] >= 10  # the benchmark's own rows
    assert stage["mix"]["repeats"] > 1000  # general: under 500 rows, 1500 wanted
    assert v.manifest["mix"]["groups"]["general"]["rows"] == 1500


def test_mix_settings_are_checked(sources):
    bad = [({"shares": {"medical": 0.7, "general": 0.2}}, "they sum to 0.9, not 1"),
           ({"shares": {"medical": 0.7, "other": 0.3}}, "'other' is not a group"),
           ({"shares": {"medical": 1.0}}, "group(s) general have no share"),
           ({"by": "words", "shares": {"medical": 0.5, "general": 0.5}}, "is not rows or "
                                                                          "tokens"),
           ({"shares": {"medical": 0.5, "general": 0.5}, "totl": 5}, "totl")]
    for mix, words in bad:
        with pytest.raises(recipe_mod.RecipeError) as e:
            recipe(mix)
        assert words in str(e.value), (mix, str(e.value))
    with pytest.raises(recipe_mod.RecipeError, match="weight: must be in"):
        recipe_mod.from_dict({"sources": [{"ref": "canonical/x", "weight": 0}]})


def test_realised_shares_in_the_report(sources):
    v = pipeline.build("sft", recipe({"by": "rows", "total": 1000,
                                      "shares": {"medical": 0.5, "general": 0.5}}),
                       sources, name="reported", progress=False)
    page = (v.path / "report.html").read_text(encoding="utf-8")
    assert "<h3>Mix (by rows; tokens: estimate" in page
    assert json.dumps(v.manifest["mix"]["groups"]["general"]["share_rows"]) == "0.5"


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not "
                                                                     "installed")
def test_the_same_mixed_version_on_ray(sources):
    import ray

    from meddata.engines.ray import RayEngine

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        r = recipe({"by": "tokens", "total": 60000, "shares": {"medical": 0.7,
                                                               "general": 0.3}},
                   validation_ratio=0.2)
        local = build(sources, r, "local")
        on_ray = build(sources, r, "ray", RayEngine())
    finally:
        ray.shutdown()
    assert on_ray.id == local.id
    assert on_ray.manifest["mix"]["groups"] == local.manifest["mix"]["groups"]

    def books(v):
        return [(s["stage"], s["rows_in"], s["rows_out"], s["dropped"], s.get("repeats"))
                for s in v.manifest["stages"]]
    assert books(on_ray) == books(local)
    assert local.manifest["mix"]["groups"]["general"]["repeats"] > 0


def test_tokens_counted_with_the_recipes_tokenizer(sources, tmp_path):
    pytest.importorskip("transformers")
    from meddata.testing import tiny_tokenizer

    tiny_tokenizer(tmp_path / "tok")
    r = recipe({"by": "tokens", "total": 40000, "shares": {"medical": 0.75, "general": 0.25}},
               tokenizer=str(tmp_path / "tok"))
    v = build(sources, r, "tok")
    mix = v.manifest["mix"]
    assert mix["counter"] == "tokenizer"
    assert abs(mix["groups"]["general"]["share_tokens"] - 0.25) <= 0.01
    estimate = build(sources, recipe({"by": "tokens", "total": 40000, "shares": {
        "medical": 0.75, "general": 0.25}}), "estimate").manifest["mix"]
    assert estimate["counter"].startswith("estimate")
    assert estimate["groups"]["general"]["tokens"] != mix["groups"]["general"]["tokens"]
