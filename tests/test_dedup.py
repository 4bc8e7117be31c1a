from __future__ import annotations

import json

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES
from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.cli import cli
from meddata.steps.decontam import DecontamConfig
from meddata.steps.decontam import decontaminate
from meddata.steps.dedup import DedupConfig, dedup
from meddata.text import normalize_key, tokens

BASE = {"source": "medqa", "subset": "us", "split": "train", "task": "mcq", "lang": "en",
        "context": None, "rationale": None, "response": None, "meta": "{}", "raw_sha1": "0"}
OPTS = [{"label": "A", "text": "Aspirin"}, {"label": "B", "text": "Heparin"},
        {"label": "C", "text": "Warfarin"}, {"label": "D", "text": "Dabigatran"}]
Q = ("A 67 year old man with atrial fibrillation and a mechanical mitral valve replaced three "
     "years ago asks which oral drug he should take for long term prevention of valve "
     "thrombosis and stroke")


def mcq(id_, question=Q, options=OPTS, answer="Warfarin", **kw):
    label = next((o["label"] for o in options if o["text"] == answer), None)
    return {**BASE, "id": id_, "question": question, "options": options, "answer": answer,
            "answer_label": label, **kw}


def test_normalization_rules():
    assert normalize_key("ＡＢＣ　１２３") == "abc 123"            # full-width to half-width
    assert normalize_key("Straße DNA") == normalize_key("STRASSE dna")  # case-fold
    assert normalize_key("a \t\n b") == "a b"                       # whitespace collapsed
    assert normalize_key("发热，咳嗽。（3天）") == "发热 咳嗽 3天"        # Chinese punctuation
    assert normalize_key("Hello, world!?") == "hello world"
    assert normalize_key("5 mg") != normalize_key("50 mg")          # digits are kept
    assert tokens("Aspirin 100mg 阿司匹林") == ["aspirin", "100mg", "阿", "司", "匹", "林"]


def test_planted_cluster_keeps_one_by_rule():
    rows = [mcq("a"), mcq("b", question=Q.upper() + " ?!"),           # exact after normalizing
            mcq("c", question=Q.replace("oral drug", "oral medicine")),  # one word changed
            mcq("d", options=OPTS[::-1], rationale="Warfarin is the only option for valves."),
            mcq("other", question="Which vitamin deficiency causes scurvy in sailors on long "
                                  "voyages without fresh fruit", answer="Aspirin")]
    kept, dropped, summary = dedup(rows)
    assert [r["id"] for r in kept] == ["d", "other"]  # d has the longest rationale
    by_id = {d["id"]: d for d in dropped}
    assert by_id["a"]["reason"] == "exact_duplicate" and by_id["a"]["kept"] == "d"
    assert by_id["c"]["reason"] == "near_duplicate" and 0.8 <= by_id["c"]["similarity"] < 1
    assert {d["cluster"] for d in dropped} == {"d"}
    assert summary["rows_in"] == summary["rows_out"] + len(dropped)
    # source priority beats everything else
    prio = [mcq("x", source="medmcqa"), mcq("y", rationale="long " * 50)]
    kept, _, _ = dedup(prio, DedupConfig(source_priority=["medmcqa", "medqa"]))
    assert [r["id"] for r in kept] == ["x"]


def test_different_answers_are_not_duplicates():
    rows = [mcq("a"), mcq("b", answer="Dabigatran")]
    kept, dropped, _ = dedup(rows)
    assert len(kept) == 2 and not dropped


def test_short_texts_are_exact_only_and_never_collapse():
    rows = [mcq("a", question="Drug of choice?", answer="Aspirin"),
            mcq("b", question="Dose of choice?", answer="Aspirin"),
            mcq("c", question="drug of choice", answer="Aspirin")]
    kept, dropped, _ = dedup(rows)
    assert [r["id"] for r in kept] == ["a", "b"]
    assert dropped[0]["id"] == "c" and dropped[0]["reason"] == "exact_duplicate"


def test_chinese_near_duplicates_with_character_shingles():
    q1 = "患者女性三十五岁反复上腹部疼痛两年进食后缓解夜间疼痛明显伴有反酸嗳气最可能的诊断是什么"
    q2 = q1.replace("反复", "反反复复")
    rows = [{**BASE, "id": "z1", "lang": "zh", "task": "open_qa", "question": q1,
             "response": "十二指肠溃疡", "options": [], "answer": None},
            {**BASE, "id": "z2", "lang": "zh", "task": "open_qa", "question": q2,
             "response": "十二指肠溃疡。", "options": [], "answer": None}]
    kept, dropped, _ = dedup(rows)
    assert len(kept) == 1 and dropped[0]["reason"] == "near_duplicate"


def test_decontam_whitespace_and_punctuation_paraphrase():
    bench = [mcq("medqa/us/test/b1"), {**BASE, "id": "pubmedqa/labeled/test/123",
                                        "source": "pubmedqa", "task": "yes_no",
                                        "question": "Does X reduce Y?", "options": [],
                                        "answer": "yes", "meta": json.dumps({"pmid": "123"})}]
    train = [mcq("t1", question=Q.replace(" ", "  ").replace("stroke", "stroke ?!")),
             {**bench[1], "id": "pubmedqa/artificial/train/123"},
             {**bench[1], "id": "pubmedqa/artificial/train/9", "meta": "{}",
              "question": "does x reduce y"},
             mcq("clean", question="Which vitamin deficiency causes scurvy in sailors on long "
                                   "voyages without fresh fruit", answer="Aspirin")]
    kept, dropped, summary = decontaminate(train, bench)
    assert [r["id"] for r in kept] == ["clean"]
    by_id = {d["id"]: d for d in dropped}
    assert by_id["t1"]["matched"] == "medqa/us/test/b1" and by_id["t1"]["method"] == "ngram"
    assert by_id["pubmedqa/artificial/train/123"]["method"] == "pmid"
    assert by_id["pubmedqa/artificial/train/9"]["method"] == "title"
    assert summary["contaminated"] == 3


def test_cli_dedup_then_decontam_conserves_rows(tmp_path, store):
    runner = CliRunner()
    src = tmp_path / "train.jsonl"
    recs = [{"question": Q, "options": {o["label"]: o["text"] for o in OPTS}, "answer_idx": "C",
             "realidx": "r1"},
            {"question": Q + " ", "options": {o["label"]: o["text"] for o in OPTS[::-1]},
             "answer": "Warfarin", "realidx": "r2"},
            {"question": "Which antidote reverses heparin?", "options": {"A": "Protamine",
                                                                        "B": "Vitamin K"},
             "answer_idx": "A"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    bench = tmp_path / "test.jsonl"
    bench.write_text(json.dumps(recs[2]) + "\n")
    s = ["--store", str(store.root)]
    assert runner.invoke(cli, s + ["convert", "medqa", str(src), "--quiet"]).exit_code == 0
    assert runner.invoke(cli, s + ["convert", "medqa", str(bench), "--name", "bench",
                                   "--quiet"]).exit_code == 0
    out = runner.invoke(cli, s + ["dedup", "canonical/medqa"])
    assert out.exit_code == 0, out.output
    assert "exact duplicates  1" in out.output
    out = runner.invoke(cli, s + ["decontam", "canonical/medqa-dedup", "--against",
                                  "canonical/bench"])
    assert out.exit_code == 0, out.output
    assert "matched medqa/us/test/" in out.output
    v = store.resolve("canonical/medqa-dedup-decontam")
    assert v.rows == 1
    stage = v.manifest["stages"][0]
    assert stage["rows_in"] == 2 and stage["dropped"] == {"contaminated": 1}
    assert [p["name"] for p in v.manifest["parents"]] == ["medqa-dedup", "bench"]
    rej = v.rejects().to_pylist()
    assert rej[0]["reason"] == "contaminated" and json.loads(rej[0]["raw"])["question"]
    shown = runner.invoke(cli, s + ["show", "canonical/medqa-dedup"])
    assert "dedup" in shown.output and '"exact_duplicate": 1' in shown.output


def test_recipe_dedup_and_decontam_stages(tmp_path, store):
    from meddata import convert
    from meddata.converters import get

    convert.publish(get("medmcqa")(), [str(EXAMPLES / "medmcqa")], store, name="bench",
                progress=False)
    data = pipeline.examples_recipe().to_dict()
    data["dedup"] = {"threshold": 0.9}
    data["decontam"] = {"against": ["canonical/bench"]}
    v = pipeline.build("sft", recipe_mod.from_dict(data), store, progress=False)
    stages = {s["stage"]: s for s in v.manifest["stages"]}
    assert stages["decontam"]["dropped"]["contaminated"] == 10  # every MedMCQA example row
    assert all(p["id"] for p in v.manifest["parents"])
    assert v.manifest["decontam"]["summary"]["contaminated"] == 10
    assert not any(r.startswith("medmcqa/") for r in v.to_table(columns=["id"])["id"]
                   .to_pylist())
    rejects = v.rejects().to_pylist()
    assert sum(r["stage"] == "decontam" for r in rejects) == 10
    # every dropped row is in the rejects, with its stage and reason
    assert len(rejects) == sum(sum(s["dropped"].values()) for s in v.manifest["stages"]
                               if s["stage"] != "select")
    bad = dict(data, dedup={"treshold": 0.9})
    try:
        recipe_mod.from_dict(bad)
    except recipe_mod.RecipeError as e:
        assert "recipe.dedup: unknown key 'treshold' (did you mean 'threshold'?)" in str(e)
    else:
        raise AssertionError("unknown dedup key accepted")


def test_grouped_band_candidates_equal_datasketch_lsh():
    """Candidates from grouping equal band hashes are exactly the pairs datasketch's
    MinHashLSH (the reference implementation) returns with the same bands and rows."""
    import numpy as np
    from datasketch import LeanMinHash, MinHashLSH

    from meddata.minhash import band_hashes, candidate_pairs

    rng = np.random.default_rng(3)
    sig = rng.integers(0, 2**32, size=(300, 128), dtype=np.uint32)
    for k in range(0, 300, 3):  # near copies: a few bands' worth of values changed
        sig[k + 1] = sig[k]
        sig[k + 1, rng.choice(128, 40, replace=False)] = rng.integers(0, 2**32, 40)
    sig[200:260] = sig[200]  # one big run: more members than RUN_PAIRS_CAP pairs all-to-all
    ours = {tuple(p) for p in candidate_pairs(list(band_hashes(sig, 25, 5).T)).tolist()}
    lsh = MinHashLSH(num_perm=125, params=(25, 5))
    hashes = [LeanMinHash(seed=1, hashvalues=sig[i, :125], scheme="affine32")
              for i in range(300)]
    for i, h in enumerate(hashes):
        lsh.insert(i, h)
    theirs = {(min(i, j), max(i, j)) for i, h in enumerate(hashes) for j in lsh.query(h)
              if i != j}
    big = {(i, j) for i in range(200, 260) for j in range(i + 1, 260)}
    assert len(theirs) > 200
    assert ours - big == theirs - big  # every pair outside the big run, exactly
    assert all((200, j) in ours for j in range(201, 260))  # the big run stays connected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sets(st.integers(0, 50)), st.sets(st.integers(0, 50))),
                min_size=1, max_size=20))
def test_vectorized_jaccard_is_exact(pairs):
    import numpy as np

    from meddata.minhash import jaccard_pairs

    def packed(sets):
        # hashes spread over the whole 64-bit range, as real shingle hashes are
        vals = [np.sort(np.array([(x * 0x9E3779B97F4A7C15) % 2**64 for x in s], np.uint64))
                for s in sets]
        offsets = np.r_[0, np.cumsum([len(v) for v in vals])].astype(np.int64)
        return (np.concatenate(vals) if vals else np.empty(0, np.uint64)), offsets

    va, oa = packed([a for a, _ in pairs])
    vb, ob = packed([b for _, b in pairs])
    idx = np.arange(len(pairs))
    got = jaccard_pairs(va, oa, idx, vb, ob, idx)
    want = [len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs]
    assert np.allclose(got, want)


def test_decontam_minhash_catches_a_near_copy():
    bench = [mcq("medqa/us/test/b1"), mcq("medqa/us/test/b2", question="Which vitamin "
                                          "deficiency causes scurvy in sailors on long voyages")]
    near = Q.replace("oral drug", "oral medicine")  # one word changed: no shared whole item
    train = [mcq("t1", question=near), mcq("t2", question="Which enzyme is deficient in "
                                             "classic phenylketonuria in newborn infants")]
    cfg = DecontamConfig(ngram_en=100)  # n-grams longer than any item: only MinHash can match
    kept, dropped, summary = decontaminate(train, bench, cfg)
    assert [r["id"] for r in kept] == ["t2"]
    assert dropped[0]["method"] == "minhash" and dropped[0]["matched"] == "medqa/us/test/b1"
    assert 0.8 <= dropped[0]["similarity"] < 1


def test_results_do_not_depend_on_batch_size():
    rows = [mcq(f"r{i}", question=Q.replace("three", f"{i % 7} or {i % 5}")) for i in range(40)]
    rows += [mcq(f"s{i}", question=f"Which nerve supplies muscle number {i} of the forearm "
                                   f"in adults {i * 7}", answer="Aspirin") for i in range(20)]
    bench = [mcq("b1", question=Q.replace("three", "1 or 1")), rows[45]]
    expected = dedup(rows), decontaminate(rows, bench)
    assert expected[0][1] and expected[1][1]  # both found something
    assert (dedup(rows, batch_rows=7), decontaminate(rows, bench, batch_rows=7)) == expected


def test_cli_dedup_against_an_earlier_version_saves_and_reuses_its_index(tmp_path, store):
    runner = CliRunner()
    s = ["--store", str(store.root)]
    opts = {o["label"]: o["text"] for o in OPTS}
    first = tmp_path / "v1.jsonl"
    first.write_text(json.dumps({"question": Q, "options": opts, "answer_idx": "C"}) + "\n")
    second = tmp_path / "v2.jsonl"
    second.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": Q.replace("oral drug", "oral medicine"), "options": opts,
         "answer_idx": "C"},  # a near copy of the earlier version's row
        {"question": "Which antidote reverses heparin?", "options": {"A": "Protamine",
                                                                    "B": "Vitamin K"},
         "answer_idx": "A"}]))
    for path, name in ((first, "old"), (second, "new")):
        assert runner.invoke(cli, s + ["convert", "medqa", str(path), "--name", name,
                                       "--quiet"]).exit_code == 0
    out = runner.invoke(cli, s + ["dedup", "canonical/new", "--against", "canonical/old",
                                  "--quiet"])
    assert out.exit_code == 0, out.output
    assert "duplicates of earlier versions  1" in out.output
    old = store.resolve("canonical/old")
    (saved,) = (old.path / "indexes").glob("dedup-*.parquet")
    v = store.resolve("canonical/new-dedup")
    assert v.rows == 1 and v.manifest["stages"][0]["indexes"][0]["reused"] is False
    rej = v.rejects().to_pylist()
    assert rej[0]["reason"] == "duplicate_of_earlier"
    assert json.loads(rej[0]["detail"])["against"] == old.ref
    stamp = saved.stat().st_mtime_ns
    out = runner.invoke(cli, s + ["dedup", "canonical/new", "--against", "canonical/old",
                                  "--name", "again", "--quiet"])
    assert out.exit_code == 0, out.output
    again = store.resolve("canonical/again")
    assert again.manifest["stages"][0]["indexes"][0]["reused"] is True
    assert saved.stat().st_mtime_ns == stamp and again.id == v.id
