from __future__ import annotations

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, canonical_rows, through_workers
from meddata import recipe as recipe_mod
from meddata.builders import export, pipeline, render
from meddata.builders.rejected import CrossSample, Distractor, NoRejected
from meddata.cli import cli
from meddata.steps import StepError

MSGS = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
OPTS = pa.list_(pa.struct([("label", pa.string()), ("text", pa.string())]))
LINEAGE = [("id", pa.string()), ("source", pa.string()), ("lang", pa.string()),
           ("task", pa.string()), ("split", pa.string())]
EXPECTED = {  # the output schemas of docs/schema.md, written out
    "sft": LINEAGE + [("messages", MSGS)],
    "preference": LINEAGE + [("prompt", MSGS), ("chosen", MSGS), ("rejected", MSGS),
                             ("rejected_by", pa.string())],
    "kto": LINEAGE + [("prompt", MSGS), ("completion", MSGS), ("label", pa.bool_()),
                      ("rejected_by", pa.string())],
    "pretrain": LINEAGE + [("text", pa.string())],
    "prompts": LINEAGE + [("prompt", MSGS), ("answer", pa.string()),
                          ("answer_label", pa.string()), ("options", OPTS)],
}


def examples(**overrides):
    data = pipeline.examples_recipe().to_dict()
    data.update(overrides)
    return recipe_mod.from_dict(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every kind built once from the examples into one store."""
    from meddata.store import Store

    store = Store(tmp_path_factory.mktemp("b") / "store")
    out = {}
    for kind in EXPECTED:
        out[kind] = pipeline.build(kind, examples(), store, progress=False)
    return store, out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from meddata.testing import tiny_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    return folder, tiny_tokenizer(folder)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_columns_and_types_are_exactly_the_design(built, kind):
    import datasets

    version = built[1][kind]
    assert version.schema.remove_metadata().equals(pa.schema(EXPECTED[kind]))
    files = [str(p) for p in version.shard_paths()]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert ds.num_rows == version.rows > 0
    assert len(set(ds["id"])) == ds.num_rows
    for st in version.manifest["stages"]:
        assert st["rows_in"] == st["rows_out"] + sum(st["dropped"].values())
    assert version.manifest["parents"] and all(p["id"] for p in version.manifest["parents"])


@pytest.mark.parametrize("kind", ["sft", "preference", "kto", "prompts"])
def test_trl_reads_rows_as_they_are(built, tokenizer, kind):
    from trl.data_utils import apply_chat_template, is_conversational

    ds = built[1][kind].to_dataset()
    for row in ds.select(range(min(5, ds.num_rows))):
        example = {k: v for k, v in row.items()
                   if k in ("messages", "prompt", "chosen", "rejected", "completion", "label")}
        assert is_conversational(example)
        templated = apply_chat_template(example, tokenizer[1])
        assert all(isinstance(v, str) for k, v in templated.items() if k != "label")
        assert "<|im_start|>user" in (templated.get("prompt") or templated.get("text"))


def test_rendering_per_task_and_language(built):
    ds = built[1]["sft"].to_dataset()
    rows = {r["id"]: r for r in ds}
    zh_mcq = next(r for r in rows.values() if r["source"] == "medqa" and r["lang"] == "zh")
    assert "选项：" in zh_mcq["messages"][0]["content"]
    assert "答案是" in zh_mcq["messages"][1]["content"]
    scurvy = rows["medmcqa/default/dev/ex-mm-0001"]["messages"]
    assert "A. Vitamin A\nB. Vitamin B1" in scurvy[0]["content"]
    answer = scurvy[1]["content"]
    assert answer.startswith("<think>\n") and answer.endswith("The answer is C. Vitamin C.")
    o1 = next(r for r in rows.values() if r["source"] == "medical_o1" and r["lang"] == "en")
    assert o1["messages"][1]["content"].startswith("<think>\nSwelling of lips")
    alpaca = next(r for r in rows.values() if r["source"] == "hwt_cm" and "输入：" in
                  r["messages"][0]["content"])
    assert "畏寒肢冷" in alpaca["messages"][0]["content"]
    pub = next(r for r in rows.values() if r["source"] == "pubmedqa")
    assert pub["messages"][0]["content"].startswith("Context:\nBACKGROUND:")


def test_reasoning_options(tmp_path):
    row = {"id": "x", "task": "reasoning", "lang": "en", "question": "Q", "response": "R",
           "rationale": "because"}
    assert render.chosen_text(row, "think") == "<think>\nbecause\n</think>\n\nR"
    assert render.chosen_text(row, "inline") == "because\n\nR"
    assert render.chosen_text(row, "none") == "R"
    mcq = {"id": "y", "task": "mcq", "lang": "en", "question": "Q", "answer_label": "B",
           "answer": "beta", "rationale": "why", "options": [{"label": "A", "text": "alpha"},
                                                             {"label": "B", "text": "beta"}]}
    assert render.chosen_text(mcq, "inline") == "The answer is B. beta.\n\nwhy"


def test_distractor_commits_to_a_wrong_option_without_copying(built):
    ds = built[1]["preference"].to_dataset()
    checked = 0
    for row in ds:
        if row["rejected_by"] != "distractor" or row["task"] != "mcq":
            continue
        checked += 1
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        gold_line = chosen.rsplit("\n", 1)[-1]
        assert gold_line not in rejected
        think_gold = chosen.split("</think>")[0]
        think_bad = rejected.split("</think>")[0]
        assert think_gold != think_bad
        assert ("The answer is" in rejected) or ("答案是" in rejected)
    assert checked >= 3  # (the examples have MedMCQA, MedQA and CMExam questions)


def test_cross_sample_prefers_same_subject_and_drops_near_equal():
    recipe = examples()
    rows = [{"id": f"r{i}", "source": "s", "task": "open_qa", "lang": "en",
             "meta": json.dumps({"subject": "cardio" if i < 2 else "renal"})} for i in range(4)]
    chosen = ["c0", "c1", "c2", "c3"]
    out = CrossSample(recipe).rejected(rows, chosen)
    assert sorted(out[:2]) == ["c0", "c1"] and out[0] != "c0"
    assert sorted(out[2:]) == ["c2", "c3"]
    [lonely] = CrossSample(recipe).rejected(rows[:1], chosen[:1])
    assert isinstance(lonely, NoRejected) and lonely.reason == "no_matching_rejected"
    same = [{"id": f"d{i}", "source": "s", "lang": "en", "task": "instruction", "split": "train",
             "question": f"Question {i}?", "context": None, "response": "Identical answer text "
             "for every row here.", "rationale": None, "meta": "{}", "options": []}
            for i in range(3)]
    pairs, dropped = pipeline.run_rows("preference", same, recipe)
    assert pairs == [] and dropped == {"rejected_near_chosen": 3}


def test_preference_pairs_do_not_give_themselves_away(built):
    """Every pair of the examples: a <think> block in both answers or in neither, the answer
    line in both or neither, one language; the build's check says so (issue 32 item 7)."""
    from meddata.builders.preference import Pair
    from meddata.text import detect_lang

    version = built[1]["preference"]
    rows = version.to_table().to_pylist()
    canon = {}
    for r in rows:
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert chosen.startswith("<think>") == rejected.startswith("<think>"), r["id"]
        assert detect_lang(chosen) == detect_lang(rejected), r["id"]
        canon[r["id"]] = r
    check = version.manifest["rejected"]["check"]
    assert check["matched"] == len(rows) == check["pairs_checked"] - \
        check["rejected_format_mismatch"] - check["rejected_lang_mismatch"]
    assert check["kept_mismatched"] == 0
    from meddata.report import summary_section

    assert "rejected check" in summary_section(version, built[0]) and \
        f"{len(rows)} of {check['pairs_checked']} pairs match" in summary_section(version, None)
    assert Pair.mismatch({"task": "mcq", "lang": "en"}, "The answer is A. x",
                         "<think>\nwhy\n</think>\n\nThe answer is B. y") == \
        "rejected_format_mismatch"
    assert Pair.mismatch({"task": "open_qa", "lang": "en"}, "Drink less salt.",
                         "少吃盐，多运动。") == "rejected_lang_mismatch"


def test_distractor_follows_the_chosen_format():
    recipe = examples()  # reasoning: think
    opts = [{"label": c, "text": t} for c, t in zip("ABCD", ("Aspirin", "Heparin", "Warfarin",
                                                              "Insulin"))]
    base = {"id": "q", "task": "mcq", "lang": "en", "options": opts, "answer_label": "B",
            "answer": "Heparin", "rationale": None, "response": None}
    plain = Distractor(recipe).one(base)
    assert not plain.startswith("<think>") and plain.startswith("The answer is ")
    assert "\n" not in plain  # the chosen is one answer line, so is the rejected
    thought = Distractor(recipe).one({**base, "rationale": "Heparin acts at once."})
    assert thought.startswith("<think>\n") and "\n</think>\n\nThe answer is " in thought
    written = Distractor(recipe).one({**base, "response": "Give heparin now."})
    assert not written.startswith("<think>") and written.count("\n\n") == 1
    yes_no = {"id": "p", "task": "yes_no", "lang": "zh", "answer": "yes", "answer_label": "yes",
              "rationale": "研究显示有效。"}
    assert Distractor(recipe).one(yes_no).startswith("<think>\n研究")


def test_cross_sample_partners_share_language_task_and_format():
    recipe = examples()
    rows = [{"id": f"r{i}", "source": "s", "task": "open_qa" if i < 4 else "instruction",
             "lang": "en" if i % 2 else "zh", "meta": "{}"} for i in range(6)]
    chosen = [f"answer {i}" if i % 2 else f"回答{i}" for i in range(6)]
    chosen[5] = "<think>\nx\n</think>\n\nanswer 5"
    out = CrossSample(recipe).rejected(rows, chosen)
    assert out[0] == chosen[2] and out[2] == chosen[0]  # zh open_qa with zh open_qa
    assert out[1] == chosen[3] and out[3] == chosen[1]  # en open_qa with en open_qa
    assert all(isinstance(o, NoRejected) for o in out[4:])  # alone in their group


def test_yes_no_distractor_flips_the_decision():
    recipe = examples()
    row = {"id": "p", "task": "yes_no", "lang": "en", "answer": "yes", "answer_label": "yes"}
    assert Distractor(recipe).one(row).endswith("The answer is no.")


def test_kto_interleaves_both_labels_and_unpairs_a_version(built):
    store, versions = built
    rows = versions["kto"].to_table().to_pylist()
    labels = [r["label"] for r in rows]
    assert labels[:4] == [True, False, True, False]
    assert versions["kto"].manifest["stats"]["kto"]["desirable_ratio"] == 0.5
    assert all(r["rejected_by"] for r in rows if not r["label"])
    v = pipeline.build("kto", recipe_mod.from_dict(
        {"from_ref": versions["preference"].ref, "name": "unpaired"}), store, progress=False)
    assert v.rows == 2 * versions["preference"].rows
    assert v.manifest["parents"][0]["id"] == versions["preference"].id


def test_same_recipe_same_id_and_seed_changes_it(tmp_path):
    from meddata.store import Store

    a = pipeline.build("preference", examples(), Store(tmp_path / "a"), progress=False)
    b = pipeline.build("preference", examples(), Store(tmp_path / "b"), progress=False)
    c = pipeline.build("preference", examples(seed=7), Store(tmp_path / "c"), progress=False)
    assert a.id == b.id and c.id != a.id


def test_max_tokens_with_tokenizer_and_packing(tmp_path, tokenizer):
    from meddata.store import Store

    store = Store(tmp_path / "s")
    v = pipeline.build("sft", examples(max_tokens=150, tokenizer=str(tokenizer[0])), store,
                        progress=False)
    length = next(s for s in v.manifest["stages"] if s["stage"] == "length")
    assert length["dropped"]["too_long"] > 0 and length["counter"] == "tokenizer"
    assert v.manifest["stats"]["length_tokens"]["max"] <= 150
    assert v.manifest["stats"]["tokenizer"]["tokenizer_sha256"]
    p = pipeline.build("pretrain", examples(max_tokens=64, tokenizer=str(tokenizer[0]),
                                             pack=True), store, progress=False)
    rows = p.to_table().to_pylist()
    for split in ("train", "validation"):  # every sequence but each group's last is full
        for lang in ("en", "zh"):
            lengths = [len(r["input_ids"]) for r in rows
                       if r["split"] == split and r["lang"] == lang]
            assert set(lengths[:-1]) == {64} and 0 < lengths[-1] <= 64
    assert p.schema.field("input_ids").type == pa.list_(pa.int32())
    eos = tokenizer[1].eos_token_id
    assert sum(r["input_ids"].count(eos) for r in rows) == next(
        s for s in p.manifest["stages"] if s["stage"] == "split")["rows_in"]
    # a packed row carries ids, not decoded text (TRL takes input_ids as tokenized)
    assert "text" not in p.schema.names
    assert "sequence_length" in p.manifest["validation"]["checks"]
    with pytest.raises(ValueError, match="packed pretrain version carries input_ids.*without "
                                         "--pack"):
        export.export(p, tmp_path / "lf", "llamafactory")
    assert not list((tmp_path / "lf").glob("*.json"))  # nothing half written
    assert export.export(p, tmp_path / "jl", "jsonl")


def test_select_filters_conserve_rows(tmp_path):
    from meddata.store import Store

    data = examples().to_dict()
    data["sources"] = [{"source": "medmcqa", "paths": [str(EXAMPLES / "medmcqa")],
                        "limit": 3}, {"source": "pubmedqa", "paths": [str(EXAMPLES / "pubmedqa")],
                                      "split": ["test"]}]
    v = pipeline.build("sft", recipe_mod.from_dict(data), Store(tmp_path / "s"), progress=False)
    select = v.manifest["stages"][0]
    assert select["rows_out"] == 3 + 2
    assert select["dropped"] == {"over_limit": 7, "split_not_selected": 4}


def test_export_llamafactory_and_jsonl(built, tmp_path):
    versions = built[1]
    out = tmp_path / "lf"  # every kind into one folder: nothing overwrites anything
    for kind in ("sft", "preference", "kto", "pretrain", "prompts"):
        export.export(versions[kind], out, "llamafactory")
    info = json.loads((out / "dataset_info.json").read_text())
    assert {f"{k}_examples_{s}" for k in EXPECTED for s in ("train", "validation")} == set(info)
    for kind in ("sft", "preference", "kto", "pretrain", "prompts"):
        entry = info[f"{kind}_examples_train"]
        data = json.loads((out / entry["file_name"]).read_text())
        assert data and set(entry) <= {"file_name", "formatting", "ranking", "columns", "tags"}
        if kind == "preference":
            assert entry["ranking"] is True and entry["formatting"] == "sharegpt"
            assert set(data[0]) >= {"messages", "chosen", "rejected"}
            assert data[0]["chosen"]["role"] == "assistant"
        if kind == "kto":
            assert entry["columns"]["kto_tag"] == "label"
            assert {type(r["label"]) for r in data} == {bool}
        if kind == "pretrain":
            assert entry["columns"] == {"prompt": "text"} and "text" in data[0]
        if kind == "sft":
            assert entry["tags"]["role_tag"] == "role" and data[0]["messages"][-1][
                "role"] == "assistant"
    written = export.export(versions["sft"], tmp_path / "j", "jsonl")
    first = json.loads(written[0].read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "user"


def lf_alpaca_messages(example: dict, columns: dict) -> list[dict]:
    """What LLaMA-Factory's alpaca converter (data/converter.py, AlpacaDatasetConverter)
    reads from one record: the history pairs as user/assistant turns, then prompt and
    query joined by a newline as the user turn, then the response."""
    out = [{"role": "system", "content": example[columns["system"]]}] if \
        columns.get("system") and example.get(columns["system"]) else []
    if columns.get("history") and isinstance(example[columns["history"]], list):
        for old_prompt, old_response in example[columns["history"]]:
            out += [{"role": "user", "content": old_prompt},
                    {"role": "assistant", "content": old_response}]
    query = [example[columns[k]] for k in ("prompt", "query") if example[columns[k]]]
    return out + [{"role": "user", "content": "\n".join(query)},
                  {"role": "assistant", "content": example[columns["response"]]}]


def test_export_alpaca_keeps_every_turn_in_history(built, tmp_path):
    version = built[1]["sft"]
    out = tmp_path / "lf"
    export.export(version, out, "llamafactory", layout="alpaca")
    info = json.loads((out / "dataset_info.json").read_text())
    seen_multi = 0
    for split in version.splits:
        entry = info[f"sft_examples_{split}"]
        assert entry["columns"]["history"] == "history"
        data = json.loads((out / entry["file_name"]).read_text())
        rows = [r for b in version.iter_batches(split=split) for r in b.to_pylist()]
        assert len(data) == len(rows)
        for rec, row in zip(data, rows):
            assert lf_alpaca_messages(rec, entry["columns"]) == row["messages"]
            seen_multi += len(rec["history"]) > 0
    assert seen_multi  # the ShareGPT example dialogues have several turns


def test_cli_default_build_from_a_fresh_store(tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["--store", str(tmp_path / "fresh"), "build", "preference",
                              "--quiet"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("published preference/examples@")
    for word in ("rejected_by", "distractor", "cross_sample", "length in tokens", "lang"):
        assert word in out.output
    again = runner.invoke(cli, ["--store", str(tmp_path / "fresh"), "build", "kto", "--from",
                                "preference/examples", "--name", "k", "--quiet"])
    assert again.exit_code == 0 and "desirable" in again.output
    exp = runner.invoke(cli, ["--store", str(tmp_path / "fresh"), "export", "preference/examples",
                              "--format", "llamafactory", "--out", str(tmp_path / "lf")])
    assert exp.exit_code == 0 and "dataset_info.json" in exp.output


def test_recipe_errors_are_clear(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("sources:\n  - {ref: canonical/x, wieght: 0.5}\n")
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "build", "sft",
                                   "--recipe", str(bad)])
    assert out.exit_code == 1
    assert "recipe.sources[0]: unknown key 'wieght' (did you mean 'weight'?)" in out.output
    bad.write_text("reasoning: sometimes\nsources: [{ref: canonical/x}]\n")
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "build", "sft",
                                   "--recipe", str(bad)])
    assert "recipe.reasoning: 'sometimes' is not think, inline or none" in out.output
    with pytest.raises(recipe_mod.RecipeError, match="validation_ratio"):
        recipe_mod.from_dict({"sources": [{"ref": "a/b"}], "validation_ratio": 1.5})
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "build", "sft",
                                   "canonical/none"])
    assert out.exit_code == 1 and "no dataset canonical/none" in out.output


def _reference_cross(rows, chosen, seed):
    """The cross_sample rule written out plainly (in memory): next row in seeded order of
    the same source, or of the same subject where that group has more than one row."""
    from meddata.steps import seeded

    groups: dict = {}
    for i, row in enumerate(rows):
        subject = json.loads(row["meta"]).get("subject")
        group = (row["source"], row["lang"], row["task"], chosen[i].startswith("<think>"))
        groups.setdefault(("src", group), []).append(i)
        if subject:
            groups.setdefault(("sub", group, subject), []).append(i)
    partner: dict = {}
    for kind in ("src", "sub"):  # subject groups override source groups
        for key, idx in groups.items():
            if key[0] != kind or len(idx) < 2:
                continue
            order = sorted(idx, key=lambda i: seeded(seed, "cross", rows[i]["id"]))
            for pos, i in enumerate(order):
                partner[i] = order[(pos + 1) % len(order)]
    return [chosen[partner[i]] if i in partner else None for i in range(len(rows))]


def test_cross_sample_in_phases_past_duckdbs_memory(tmp_path):
    """Many rows, a tiny DuckDB memory limit (it spills), many small scans in input order,
    lookups in batches of other sizes and other order, each by its own copy of the strategy
    (as workers would): every row's partner equals the plain rule's."""
    import pickle
    from pathlib import Path

    recipe = examples()
    rows = [{"id": f"r{i:05d}", "source": f"s{i % 3}", "task": "open_qa", "lang": "en",
             "meta": json.dumps({"subject": f"sub{i % 7}"} if i % 5 else {})}
            for i in range(20_000)]
    chosen = [f"answer {i} " + "x" * 200 for i in range(20_000)]
    scans = [CrossSample(recipe).scan(rows[s:s + 777], chosen[s:s + 777], Path(tmp_path))
             for s in range(0, len(rows), 777)]
    plan = CrossSample.plan(iter(scans), Path(tmp_path), memory_limit="64MB")
    plan = pickle.loads(pickle.dumps(plan))  # (shipped to the workers)
    got: list = [None] * len(rows)
    for s in reversed(range(0, len(rows), 1000)):
        worker = CrossSample(recipe)
        for i, t in enumerate(worker.lookup(plan, rows[s:s + 1000])):
            got[s + i] = None if isinstance(t, NoRejected) else t
    assert got == _reference_cross(rows, chosen, recipe.seed)
    with pytest.raises(StepError, match="did not see"):
        CrossSample(recipe).lookup(plan, [{**rows[0], "id": "never scanned"}])


@pytest.mark.parametrize("strategy", ["cross_sample", "distractor", "auto"])
def test_pairs_made_in_workers_are_the_pairs_made_in_one_go(strategy, tmp_path):
    """Pair split over read units, each scanned and mapped by its own copy (the plan on the
    driver's), gives the rows, drops and report of one pass over all the rows."""
    from meddata.builders.preference import Pair
    from meddata.engines.local import run_rows
    from meddata.schema import CANONICAL

    rows = canonical_rows(900)
    recipe = examples(rejected={"strategy": strategy, "similarity": 0.8})
    whole = Pair(recipe)
    expected, ledger = run_rows([whole], rows, CANONICAL, tmp_path)
    table = pa.Table.from_pylist(rows, schema=CANONICAL)
    cuts = [0, 37, 300, 301, 650, 900]
    units = [table.slice(a, b - a) for a, b in zip(cuts, cuts[1:])]
    split = Pair(recipe)
    got, books = through_workers(split, units, tmp_path)
    assert got == expected
    assert dict(books.dropped) == ledger.stages()[0]["dropped"]
    assert split.report() == whole.report()
    check = whole.report()["check"]
    assert check["matched"] > 300
    if strategy != "distractor":
        assert check["no_matching_rejected"] > 0
        assert whole.report()["cross_sample"]["unmatched"] == check["no_matching_rejected"]
        # partners are read from other units' texts
        unit_of = {r["id"]: n for n, u in enumerate(units) for r in u.to_pylist()}
        chosen = {r["chosen"][0]["content"]: r["id"] for r in got}
        assert any(unit_of[chosen[r["rejected"][0]["content"]]] != unit_of[r["id"]]
                   for r in got if r["rejected"][0]["content"] in chosen)


def pairs_table(n: int) -> pa.Table:
    """`n` preference pairs `p000000`.. (every fifth in the validation split)."""
    from meddata.builders import preference

    msg = [{"role": "user", "content": "q"}]
    return pa.Table.from_pylist([
        {"id": f"p{i:06d}", "source": "s", "lang": "en", "task": "mcq",
         "split": "validation" if i % 5 == 0 else "train", "prompt": msg,
         "chosen": [{"role": "assistant", "content": f"good {i}"}],
         "rejected": [{"role": "assistant", "content": f"bad {i}"}], "rejected_by": "x"}
        for i in range(n)], schema=preference.SCHEMA)


def seeded_interleaved(ids: list[str], key) -> list[str]:
    """KTO's order: the desirable rows by `key`, the undesirable ones likewise, alternating."""
    good = sorted((f"{i}#chosen" for i in ids), key=key)
    bad = sorted((f"{i}#rejected" for i in ids), key=key)
    return [x for pair in zip(good, bad) for x in pair]


def test_unpair_interleaves_in_seeded_order_at_scale(tmp_path, monkeypatch):
    """On the driver (after a step that cannot run in the workers): DuckDB sorts by
    position, out of core."""
    from pathlib import Path

    from meddata.builders import kto
    from meddata.engines import units
    from meddata.engines.local import chain as run
    from meddata.steps import Ledger, seeded

    monkeypatch.setattr(units, "DUCKDB_MEMORY", "64MB")  # make DuckDB sort out of core
    n = 30_000
    table = pairs_table(n)
    step = kto.Unpair(seed=3)
    out = [r for b in run(lambda replay: iter(table.to_batches(4096)), [step], Ledger(),
                          Path(tmp_path)) for r in b.to_pylist()]
    assert [r["id"] for r in out] == seeded_interleaved(
        [f"p{i:06d}" for i in range(n)], lambda x: seeded(3, "kto", x))
    assert all(r["label"] == r["id"].endswith("#chosen") for r in out)
    assert out[1]["completion"][0]["content"].startswith("bad ")
    assert set(out[0]) == set(kto.SCHEMA.names)  # no position column left


def build_kto_from(store, pref, name: str):
    return pipeline.build("kto", recipe_mod.from_dict({"from_ref": pref.ref, "name": name,
                                                       "seed": 3}),
                          store, progress=False, report=False)


def buckets_of(version) -> set[str]:
    """The bucket numbers of a version written by the workers (`<split>-<bucket>-<n>`)."""
    return {p.name.split("-")[1] for p in version.shard_paths()}


def rows_by_split(version) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in version.to_table(columns=["id", "split"]).to_pylist():
        out.setdefault(r["split"], []).append(r["id"])
    return out


@pytest.fixture
def many_pairs(store):
    """A preference version of 20,000 pairs: three row groups, so up to three read units."""
    from meddata.builders import preference

    return store.publish("preference", "pairs", preference.SCHEMA,
                         pairs_table(20_000).to_batches(4096))


def test_kto_order_is_the_same_over_one_read_unit_and_many(store, many_pairs, monkeypatch):
    """Unpairing in the workers: positions exchanged through buckets give the seeded,
    interleaved order, whether the pairs came as one read unit or as several, and however
    many buckets carried them."""
    from meddata.engines import units
    from meddata.steps import seeded

    monkeypatch.setattr(units, "TARGET_UNITS", 1)  # one unit, one bucket
    assert len(units.plan_units([many_pairs])) == 1
    one = build_kto_from(store, many_pairs, "one")
    monkeypatch.setattr(units, "unit_rows", lambda total: 7000)  # a unit per row group
    assert len(units.plan_units([many_pairs])) == 3
    many = build_kto_from(store, many_pairs, "many")
    assert buckets_of(one) == {"00000"} and len(buckets_of(many)) == 6  # 40,000 / 7,000
    expected = seeded_interleaved([f"p{i:06d}" for i in range(20_000)],
                                  lambda x: seeded(3, "kto", x))
    for version in (one, many):
        got = rows_by_split(version)
        assert got == {split: [x for x in expected if (int(x[1:7]) % 5 == 0) ==
                               (split == "validation")] for split in ("train", "validation")}
        stages = {s["stage"]: s for s in version.manifest["stages"]}
        assert (stages["unpair"]["rows_in"], stages["unpair"]["rows_out"],
                stages["unpair"]["kto_rows"]) == (20_000, 20_000, 40_000)
        assert version.manifest["stats"]["kto"]["desirable"] == 20_000
    assert one.to_table().to_pylist() == many.to_table().to_pylist()


def test_kto_ties_on_the_hash_break_the_same_way_over_any_units(store, many_pairs,
                                                                 monkeypatch):
    """Rows whose order hashes are equal are ranked by a second seeded hash: forced here by
    a hash of 3 bits, so every rank is a tie."""
    from meddata.builders import kto
    from meddata.engines import units
    from meddata.steps import seeded

    real = kto.seeded_array
    monkeypatch.setattr(kto, "seeded_array", lambda seed, tag, ids: real(seed, tag, ids) % 8
                        if tag == kto.ORDER else real(seed, tag, ids))
    monkeypatch.setattr(units, "TARGET_UNITS", 1)
    one = build_kto_from(store, many_pairs, "one")
    monkeypatch.setattr(units, "unit_rows", lambda total: 7000)
    many = build_kto_from(store, many_pairs, "many")
    expected = seeded_interleaved([f"p{i:06d}" for i in range(20_000)], lambda x: (
        seeded(3, "kto", x) % 8, seeded(3, "kto-tie", x)))
    assert [x for x in expected if int(x[1:7]) % 5] == rows_by_split(many)["train"]
    assert one.to_table().to_pylist() == many.to_table().to_pylist()


def test_kto_unpairing_refuses_two_pairs_with_one_id(tmp_path):
    from pathlib import Path

    from meddata.builders import kto
    from meddata.engines.local import chain as run
    from meddata.steps import Ledger, StepError

    table = pairs_table(10)
    table = pa.concat_tables([table, table.slice(3, 1)])
    with pytest.raises(StepError, match="unique pair ids"):
        list(run(lambda replay: iter(table.to_batches()), [kto.Unpair(seed=3)], Ledger(),
                 Path(tmp_path)))


def test_progress_bars_each_on_its_own_line_and_none_under_quiet(tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["--store", str(tmp_path / "s"), "build", "preference"])
    assert out.exit_code == 0, out.output
    bars = [line for line in out.stderr.split("\n") if line.strip()]
    assert len(bars) >= 3  # the conversions, then the build's two passes
    for line in bars:  # a bar redraws with \r; a second bar on the same line would show here
        descs = {part.split(":")[0].strip() for part in line.split("\r") if part.strip()}
        assert len(descs) == 1, line
    assert any("build preference (pass 2)" in line for line in bars)
    quiet = runner.invoke(cli, ["--store", str(tmp_path / "s"), "build", "preference",
                                "--quiet", "--name", "q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.output.startswith("published preference/q@")


def test_token_ids_are_computed_one_batch_ahead_in_order(tmp_path, tokenizer):
    """Packing's Length step tokenizes the next batch on a worker thread: over many small
    batches the ids come out in order, equal to tokenizing everything at once, and a
    tokenizer error stops the build with that error (and no thread left behind)."""
    import threading

    import polars as pl

    from meddata.builders import pretrain
    from meddata.engines.local import chain as run
    from meddata.length import Measure
    from meddata.steps import Ledger
    from meddata.steps.length import IDS, Length

    texts = [f"document {i} " + "word " * (i % 13) + "病人发热" * (i % 3) for i in range(50)]
    table = pa.table({"text": texts})
    measure = Measure(str(tokenizer[0]))
    step = Length(pretrain.KIND, measure, None, drop=False, ids=True)
    out = list(run(lambda replay: iter(table.to_batches(max_chunksize=7)), [step], Ledger(),
                   tmp_path))
    assert len(out) == 8 and [b.num_rows for b in out] == [7] * 7 + [1]
    got = pa.concat_arrays([b.column(IDS) for b in out]).to_pylist()
    assert got == measure.ids(pl.Series(texts)).to_pylist()

    calls = []

    def failing(series):
        calls.append(len(series))
        if len(calls) == 3:
            raise RuntimeError("tokenizer broke on batch 3")
        return measure.ids(series)

    broken = Length(pretrain.KIND, measure, None, drop=False, ids=True)
    broken.measure = type("M", (), {"ids": staticmethod(failing), "tok": measure.tok,
                                    "has_tokenizer": True, "describe": measure.describe})()
    with pytest.raises(RuntimeError, match="batch 3"):
        list(run(lambda replay: iter(table.to_batches(max_chunksize=7)), [broken], Ledger(),
                 tmp_path))
    assert not [t for t in threading.enumerate() if t.name.startswith("meddata-tokenize")]


def test_packing_is_the_plain_concatenation_cut_every_max_len(tmp_path):
    """Over batches that split groups anywhere, each (split, lang) stream is its documents'
    ids, each followed by EOS, cut every max_len; a sequence lists the sources of exactly
    the documents it holds ids of (also those carried over from an earlier batch)."""
    import random

    from meddata.builders.pretrain import Pack
    from meddata.engines.local import chain as run
    from meddata.steps import Ledger
    from meddata.steps.length import IDS

    rng = random.Random(3)
    rows = []
    for i in range(300):
        rows.append({"id": f"d{i}", "source": f"s{i % 7}", "lang": rng.choice(["en", "zh"]),
                     "task": "document", "split": rng.choice(["train", "validation"]),
                     IDS: [rng.randrange(3, 50) for _ in range(rng.choice([0, 1, 5, 40, 130]))]})
    eos, L = 2, 64
    measure = type("M", (), {"tok": type("T", (), {"eos_token_id": eos})(),
                             "has_tokenizer": True, "path": "tok"})()
    table = pa.Table.from_pylist(rows)
    out = [r for b in run(lambda replay: iter(table.to_batches(max_chunksize=37)),
                          [Pack(measure, L)], Ledger(), tmp_path) for r in b.to_pylist()]
    for split in ("train", "validation"):
        for lang in ("en", "zh"):
            docs = [r for r in rows if r["split"] == split and r["lang"] == lang]
            stream, owner = [], []
            for d in docs:
                stream += d[IDS] + [eos]
                owner += [d["source"]] * (len(d[IDS]) + 1)
            want = [stream[i:i + L] for i in range(0, len(stream), L)]
            got = [r for r in out if r["split"] == split and r["lang"] == lang]
            assert [r["input_ids"] for r in got] == want
            assert [r["source"] for r in got] == ["+".join(sorted(set(owner[i:i + L])))
                                                 for i in range(0, len(stream), L)]
