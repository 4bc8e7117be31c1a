from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES
from meddata import convert
from meddata.cli import cli
from meddata.converters import REGISTRY, get
from meddata.schema import CANONICAL
from meddata.steps import SeenKeys


def run(store, source, paths, **kw):
    opts = {k: kw.pop(k) for k in list(kw) if k in ("cop_base",)}
    conv = get(source)(subset=kw.pop("subset", None), split=kw.pop("split", None), **opts)
    return convert.publish(conv, [str(p) for p in paths], store, progress=False, **kw)


def rows_of(result):
    return {r["id"]: r for r in result.version.to_table().to_pylist()}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def check_conservation(result):
    m = result.version.manifest
    stage = m["stages"][0]
    assert stage["rows_in"] == stage["rows_out"] + sum(stage["dropped"].values())
    assert stage["rows_out"] == m["rows"] == result.version.to_table().num_rows
    assert result.version.rejects().num_rows == sum(stage["dropped"].values())


# ---- examples: every source converts, schema exact ---------------------------------------------
@pytest.mark.parametrize("source", sorted(REGISTRY))
def test_examples_convert_cleanly(store, source):
    result = run(store, source, [EXAMPLES / source])
    assert result.rows_out > 0 and not result.rejects
    assert result.version.to_table().schema.remove_metadata().equals(CANONICAL)
    check_conservation(result)
    again = run(store, source, [EXAMPLES / source])
    assert again.version.id == result.version.id  # ids and content are stable across rebuilds


# ---- PubMedQA ----------------------------------------------------------------------------------
def test_pubmedqa_original_with_ground_truth(store):
    result = run(store, "pubmedqa", [EXAMPLES / "pubmedqa"])
    rows = rows_of(result)
    r3 = rows["pubmedqa/labeled/test/90000003"]
    assert r3["answer"] == "maybe" and r3["answer_label"] == "maybe"  # "Maybe" normalized
    assert rows["pubmedqa/labeled/train/90000004"]["answer"] == "yes"  # " yes " normalized
    assert r3["context"].startswith("BACKGROUND: ")
    assert r3["rationale"].startswith("A single very low troponin")
    assert json.loads(r3["meta"])["meshes"][0] == "Troponin"
    report = result.version.manifest["convert_report"]
    assert report == {"ground_truth_labels": 3, "ground_truth_joined": 2,
                      "labels_without_record": 1}
    paths = [i["path"] for i in result.version.manifest["inputs"]]
    assert any(p.endswith("test_ground_truth.json") for p in paths)


def test_pubmedqa_unlabeled_artificial_and_bad_decisions(store, tmp_path):
    base = {"QUESTION": "Is X better than Y?", "CONTEXTS": ["Some text."], "LABELS": ["RESULTS"],
            "MESHES": [], "YEAR": "2001", "LONG_ANSWER": "Yes."}
    (tmp_path / "ori_pqau.json").write_text(json.dumps({"1": base, "2": dict(base)}))
    res = run(store, "pubmedqa", [tmp_path / "ori_pqau.json"])
    assert {r["subset"] for r in rows_of(res).values()} == {"unlabeled"}
    assert all(r["answer"] is None for r in rows_of(res).values())
    (tmp_path / "ori_pqaa.json").write_text(json.dumps({
        "3": {**base, "final_decision": "YES"}, "4": {**base, "final_decision": "probably"},
        "5": dict(base)}))
    res = run(store, "pubmedqa", [tmp_path / "ori_pqaa.json"], max_reject_rate=1.0)
    assert [r["subset"] for r in rows_of(res).values()] == ["artificial"]
    assert res.rejects == {"bad_decision": 1, "missing_field:final_decision": 1}


def test_pubmedqa_ground_truth_conflict_is_rejected(store, tmp_path):
    rec = {"QUESTION": "Q?", "CONTEXTS": ["c"], "final_decision": "no"}
    (tmp_path / "ori_pqal.json").write_text(json.dumps({"7": rec, "8": rec}))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"7": "yes"}))
    res = run(store, "pubmedqa", [tmp_path], max_reject_rate=1.0)
    assert res.rejects == {"decision_conflict": 1}
    bad = res.version.rejects().to_pylist()[0]
    assert bad["file"].endswith("ori_pqal.json") and bad["position"] == 1
    assert "ground truth says yes" in bad["detail"] and json.loads(bad["raw"])["7"]


def test_pubmedqa_hugging_face_layout(store, tmp_path):
    rec = {"pubid": 25429730, "question": "Are group 2 innate lymphoid cells increased?",
           "context": {"contexts": ["A", "B"], "labels": ["BACKGROUND", "RESULTS"],
                       "meshes": ["Adult"], "reasoning_required_pred": ["yes"]},
           "long_answer": "They are.", "final_decision": "Yes"}
    table = pa.Table.from_pylist([rec, {**rec, "pubid": 2, "final_decision": "no"}])
    pq.write_table(table, tmp_path / "pqa_labeled-train.parquet")
    res = run(store, "pubmedqa", [tmp_path / "pqa_labeled-train.parquet"])
    rows = rows_of(res)
    row = rows["pubmedqa/labeled/train/25429730"]
    assert row["answer"] == "yes" and row["context"] == "BACKGROUND: A\nRESULTS: B"


def test_pubmedqa_real_samples(store, samples):
    res = run(store, "pubmedqa", [samples / "pubmedqa"])
    assert res.rows_out == 200 and not res.rejects
    report = res.version.manifest["convert_report"]
    assert report["ground_truth_labels"] == 500
    assert report["labels_without_record"] == 500 - report["ground_truth_joined"] > 0
    splits = res.version.manifest["stats"]["counts"]["split"]
    assert splits["test"] == report["ground_truth_joined"]


# ---- MedMCQA -----------------------------------------------------------------------------------
MM = {"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "choice_type": "single",
      "exp": "because", "subject_name": "Anatomy", "topic_name": None}


def test_medmcqa_one_based_original(store):
    res = run(store, "medmcqa", [EXAMPLES / "medmcqa" / "dev.json"])
    rows = rows_of(res)
    scurvy = rows["medmcqa/default/dev/ex-mm-0001"]
    assert scurvy["answer_label"] == "C" and scurvy["answer"] == "Vitamin C"
    assert [o["label"] for o in scurvy["options"]] == ["A", "B", "C", "D"]
    assert json.loads(scurvy["meta"])["subject"] == "Biochemistry"
    unanswered = rows["medmcqa/default/dev/ex-mm-0010"]
    assert unanswered["answer"] is None and unanswered["answer_label"] is None


def test_medmcqa_zero_based_hugging_face(store, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{**MM, "id": "x1", "cop": 0},
                                                  {**MM, "id": "x2", "cop": 2}])
    rows = rows_of(run(store, "medmcqa", [path]))
    assert rows["medmcqa/default/train/x1"]["answer_label"] == "A"
    assert rows["medmcqa/default/train/x2"]["answer_label"] == "C"


def test_medmcqa_ambiguous_base_stops_and_asks(store, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{**MM, "id": "x1", "cop": 1},
                                                  {**MM, "id": "x2", "cop": 3}])
    with pytest.raises(convert.ConversionError, match="--cop-base"):
        run(store, "medmcqa", [path])
    assert store.versions() == []
    rows = rows_of(run(store, "medmcqa", [path], cop_base=1))
    assert rows["medmcqa/default/train/x1"]["answer_label"] == "A"
    out = CliRunner().invoke(cli, ["--store", str(store.root), "convert", "medmcqa", str(path),
                                   "--cop-base", "0", "--name", "zero", "--quiet"])
    assert out.exit_code == 0, out.output
    assert rows_of(type("R", (), {"version": store.resolve("canonical/zero")})())[
        "medmcqa/default/train/x1"]["answer_label"] == "B"


def test_medmcqa_test_rows_without_answers(store, tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", [{**MM, "id": "t1", "cop": -1},
                                                 {**MM, "id": "t2"}])
    rows = rows_of(run(store, "medmcqa", [path]))
    assert [r["answer"] for r in rows.values()] == [None, None]
    assert {r["split"] for r in rows.values()} == {"test"}


def test_medmcqa_real_sample_and_copies(store, samples):
    dev = run(store, "medmcqa", [samples / "medmcqa" / "dev.json"])
    assert dev.rows_out == 1000 and not dev.rejects
    by_id = rows_of(dev)
    first = by_id["medmcqa/default/dev/45258d3d-b974-44dd-a161-c3fccbdadd88"]
    assert first["answer_label"] == "A"  # cop 1 in the 1-based original release
    copies = samples / "medmcqa" / "copies"
    saf = run(store, "medmcqa", [copies / "Saf9933__Medpredict" / "validation.jsonl"],
              name="saf")
    saf_rows = list(rows_of(saf).values())
    assert saf_rows[0]["question"] == first["question"]
    assert saf_rows[0]["answer_label"] == "A"  # answer 0, 0-based
    assert saf_rows[0]["options"][0]["text"] == first["options"][0]["text"]  # "A. " stripped
    test = run(store, "medmcqa", [copies / "Saf9933__Medpredict" / "test.jsonl"], name="saft")
    assert all(r["answer"] is None for r in rows_of(test).values())
    xk = run(store, "medmcqa", [copies / "xk-huang__medagents-benchmark" / "test.jsonl"],
             name="xk")
    assert xk.rows_out == 200 and not xk.rejects
    realidx = {r["id"].rsplit("/", 1)[1] for r in rows_of(xk).values()}
    dev_ids = {i.rsplit("/", 1)[1] for i in by_id}
    assert realidx & dev_ids  # the copy keeps MedMCQA's own ids
    for row in rows_of(xk).values():
        rid = row["id"].rsplit("/", 1)[1]
        if rid in dev_ids:
            assert by_id[f"medmcqa/default/dev/{rid}"]["answer"] == row["answer"]


# ---- MedQA -------------------------------------------------------------------------------------
def test_medqa_examples_layouts(store):
    res = run(store, "medqa", [EXAMPLES / "medqa"])
    rows = list(rows_of(res).values())
    by_q = {(r["split"], r["question"][:20]): r for r in rows}
    assert {r["subset"] for r in rows} == {"us", "mcmle"}
    assert sum(r["split"] == "test" for r in rows) == 4  # US/test.jsonl
    assert {r["lang"] for r in rows if r["subset"] == "mcmle"} == {"zh"}
    warfarin = next(r for r in rows if "warfarin" in r["question"])
    assert warfarin["answer_label"] == "B" and len(warfarin["options"]) == 4  # key/value list
    mening = next(r for r in rows if "diplococci" in r["question"])
    assert mening["answer_label"] == "B"  # text-only answer "rifampin", case-normalized
    assert len(by_q) == len(rows)


@pytest.mark.parametrize("record,reason", [
    ({"answer_idx": "B", "answer": "alpha"}, "answer_mismatch"),
    ({"answer_idx": "F"}, "answer_not_in_options"),
    ({"answer": "nothing like it"}, "answer_not_in_options"),
    ({"options": {"A": "alpha", "B": ""}, "answer_idx": "A"}, "empty_option"),
    ({"options": None, "answer_idx": "A"}, "missing_field:options"),
    ({"question": "", "answer_idx": "A"}, "missing_field:question"),
])
def test_medqa_rejects(store, tmp_path, record, reason):
    good = {"question": "Which?", "options": {"A": "alpha", "B": "beta"}, "answer_idx": "A"}
    bad = {"question": "Which?", "options": {"A": "alpha", "B": "beta"}, **record}
    path = write_jsonl(tmp_path / "test.jsonl", [good, bad])
    res = run(store, "medqa", [path], max_reject_rate=1.0)
    assert res.rejects == {reason: 1}
    quarantined = res.version.rejects().to_pylist()[0]
    assert quarantined["position"] == 2 and quarantined["reason"] == reason
    check_conservation(res)


def test_medqa_full_width_and_five_options(store, tmp_path):
    rec = {"question": "下列哪项正确？", "options": {"A": "甲", "B": "ＡＢＣ药", "C": "丙", "D": "丁",
                                                "E": "戊", "F": "己"},
           "answer": "abc药。"}
    res = run(store, "medqa", [write_jsonl(tmp_path / "Taiwan_test.jsonl", [rec])])
    row = next(iter(rows_of(res).values()))
    assert row["answer_label"] == "B" and row["subset"] == "tw" and len(row["options"]) == 6


def test_medqa_real_samples_edge_cases(store, samples):
    res = run(store, "medqa", [samples / "medqa" / "US"])
    assert res.rows_out == 1800 and not res.rejects
    rows = list(rows_of(res).values())
    # options that are themselves letters: answer text "B" is option A's text, not letter B
    odd = [r for r in rows if [o["text"] for o in r["options"]] == ["B", "C", "D", "E"]]
    assert odd and odd[0]["answer_label"] == "A"
    # "LOD Score > 3" is not "LOD Score < 3": symbols count when they tell options apart
    lod = [r for r in rows if r["answer"] == "LOD Score > 3"]
    assert len(lod) == 2  # the 4- and 5-option files
    for r in lod:
        assert next(o["text"] for o in r["options"] if o["label"] == r["answer_label"]) == r["answer"]


def test_medqa_huatuo_o1_layout(store, samples):
    res = run(store, "medqa", [samples / "huatuo_o1_demo" / "demo_data.json"])
    assert res.rows_out == 120 and not res.rejects
    row = next(iter(rows_of(res).values()))
    assert row["answer_label"] == "D" and row["answer"] == "Parvovirus B19 infection"
    assert len(row["options"]) == 5  # options given as a Python-literal string
    assert row["rationale"].startswith("Alright") and row["response"]
    assert json.loads(row["meta"])["ground_truth_answer"] == "Parvovirus B19 infection"


# ---- instruction sources, reasoning, dialogue, corpus -------------------------------------------
def test_hwt_cm_array_and_jsonl(store, tmp_path):
    res = run(store, "hwt_cm", [EXAMPLES / "hwt_cm"])
    rows = list(rows_of(res).values())
    assert {r["lang"] for r in rows} == {"zh"} and {r["task"] for r in rows} == {"instruction"}
    with_input = [r for r in rows if r["context"]]
    assert len(with_input) == 1 and "畏寒" in with_input[0]["context"]
    records = json.loads((EXAMPLES / "hwt_cm" / "hwtcm_sft.json").read_text())
    jsonl = write_jsonl(tmp_path / "hwtcm.jsonl", records)
    again = run(store, "hwt_cm", [jsonl], name="hwt2")
    assert sorted(r["question"] for r in rows_of(again).values()) == sorted(
        r["question"] for r in rows)


def test_shennong_query_response_and_alpaca(store, samples):
    res = run(store, "shennong", [EXAMPLES / "shennong"])
    rows = list(rows_of(res).values())
    assert len(rows) == 4 and all(r["response"] for r in rows)
    real = run(store, "shennong", [samples / "shennong"], name="sn")
    assert real.rows_out == 5 and {r["lang"] for r in rows_of(real).values()} == {"zh"}


def test_medical_o1_configs_and_mix_detection(store, tmp_path, samples):
    res = run(store, "medical_o1", [EXAMPLES / "medical_o1"])
    rows = list(rows_of(res).values())
    assert {(r["subset"], r["lang"]) for r in rows} == {("en", "en"), ("zh", "zh")}
    assert all(r["task"] == "reasoning" and r["rationale"] for r in rows)
    mix = json.loads((EXAMPLES / "medical_o1" / "medical_o1_sft.json").read_text()) + json.loads(
        (EXAMPLES / "medical_o1" / "medical_o1_sft_Chinese.json").read_text())
    (tmp_path / "medical_o1_sft_mix.json").write_text(json.dumps(mix, ensure_ascii=False))
    mixed = rows_of(run(store, "medical_o1", [tmp_path / "medical_o1_sft_mix.json"], name="mix"))
    assert {r["subset"] for r in mixed.values()} == {"en_mix"}
    assert sorted(r["lang"] for r in mixed.values()) == ["en", "en", "en", "zh", "zh"]
    demo = run(store, "medical_o1", [samples / "huatuo_o1_demo"], name="demo")
    assert demo.rows_out == 120


def test_chinese_dialogue_gb18030_and_multiline(store, samples):
    rows = list(rows_of(run(store, "chinese_medical_dialogue",
                            [EXAMPLES / "chinese_medical_dialogue"])).values())
    assert len(rows) == 4 and {r["subset"] for r in rows} == {"internal"}
    multi = next(r for r in rows if "胃胀" in r["question"])
    assert "\n" in multi["question"]  # a quoted field spanning two lines
    real = run(store, "chinese_medical_dialogue", [samples / "chinese_medical_dialogue"],
               name="cmd")
    assert real.rows_out + real.rejects.get("duplicate_record", 0) == 300
    assert set(real.rejects) <= {"duplicate_record"}
    assert all("\ufffd" not in r["question"] for r in rows_of(real).values())


def test_corpus_txt_jsonl_medrag_and_gzip(store, tmp_path):
    res = run(store, "corpus", [EXAMPLES / "corpus"])
    rows = list(rows_of(res).values())
    assert {r["task"] for r in rows} == {"document"}
    txt = next(r for r in rows if r["question"] == "hypertension")
    assert txt["context"].startswith("Hypertension is") and txt["lang"] == "en"
    medrag = next(r for r in rows if r["id"].endswith("Anatomy_Ex_0"))
    assert medrag["question"] == "Anatomy_Ex" and medrag["context"].startswith("The brachial")
    assert {r["lang"] for r in rows} == {"en", "zh"}
    gz = tmp_path / "docs.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"text": "Aspirin irreversibly inhibits COX-1."}) + "\n")
    assert run(store, "corpus", [gz], name="gz").rows_out == 1


# ---- framework -----------------------------------------------------------------------------------
def test_unparseable_lines_are_quarantined_with_position(store, tmp_path):
    path = tmp_path / "dev.jsonl"
    good = json.dumps({**MM, "id": "g1", "cop": 0})
    path.write_text(f"{good}\n{{broken json\n\n[1, 2]\n")
    res = run(store, "medmcqa", [path], max_reject_rate=1.0)
    assert res.rows_in == 3 and res.rows_out == 1
    rej = {r["position"]: r for r in res.version.rejects().to_pylist()}
    assert rej[2]["reason"] == "unparseable" and rej[2]["raw"] == "{broken json"
    assert rej[4]["reason"] == "not_an_object"
    check_conservation(res)


def test_reject_rate_limit_publishes_nothing(store, tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", [{"question": "", "options": {"A": "x"}}] * 3
                       + [{"question": "Q", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}])
    with pytest.raises(convert.ConversionError) as err:
        run(store, "medqa", [path])
    assert "medqa" in str(err.value) and "missing_field:question" in str(err.value)
    assert f"first in {path} at position 1" in str(err.value)  # where to look
    assert store.versions() == []
    out = CliRunner().invoke(cli, ["--store", str(store.root), "convert", "medqa", str(path)])
    assert out.exit_code == 1 and "error: medqa: 3 of 4 records rejected" in out.output


def test_cli_convert_prints_reference_and_table(store):
    out = CliRunner().invoke(cli, ["--store", str(store.root), "convert", "medqa",
                                   str(EXAMPLES / "medqa"), "--quiet"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("published canonical/medqa@") and "rows out" in out.output
    assert f"in {store.root / 'canonical' / 'medqa'}" in out.output.splitlines()[0]  # where
    bad = CliRunner().invoke(cli, ["--store", str(store.root), "convert", "nosuch", "x"])
    assert bad.exit_code == 1 and "unknown source" in bad.output
    missing = CliRunner().invoke(cli, ["--store", str(store.root), "convert", "medqa", "/no/file"])
    assert missing.exit_code == 1 and "no such file" in missing.output


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children,
                                                                       max_size=4),
    max_leaves=12)
FIELDS = ["question", "options", "answer_idx", "answer", "opa", "opb", "cop", "id", "QUESTION",
          "CONTEXTS", "final_decision", "instruction", "output", "query", "response", "Question",
          "Response", "Complex_CoT", "text", "content", "ask", "choices", "context", "pubid"]
records = st.lists(st.one_of(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8),
                             json_values), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(sorted(REGISTRY)), recs=records)
def test_random_malformed_records_never_crash(tmp_path_factory, source, recs):
    from meddata.store import Store

    tmp = tmp_path_factory.mktemp("h")
    path = tmp / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + "{not json\n")
    store = Store(tmp / "store")
    try:
        res = run(store, source, [path], max_reject_rate=1.0, cop_base=0) if source == "medmcqa" \
            else run(store, source, [path], max_reject_rate=1.0)
    except convert.ConversionError as e:  # only the documented stops
        assert "holds no records" in str(e) or "cop" in str(e)
        return
    check_conservation(res)
    assert res.rows_in == len(recs) + 1


def _both_paths(store, path, **opts):
    results = []
    for fast in (True, False):
        conv = get("medmcqa")(**opts)
        conv.fast = fast
        results.append(convert.publish(conv, [str(path)], store, name=f"fast-{fast}",
                                   max_reject_rate=1.0, progress=False))
    return results


def test_medmcqa_vectorized_path_equals_record_path(store, tmp_path):
    edge = [{**MM, "id": "e1", "cop": 1}, {**MM, "id": "e2", "cop": 4, "opb": "  "},
            {**MM, "id": "e3", "cop": 7}, {**MM, "id": "e4", "question": " ", "cop": 2},
            {**MM, "id": "e1", "cop": 2}, {**MM, "cop": 3, "exp": "  "},
            {**MM, "cop": 3, "exp": "  "}, {**MM, "id": "e5", "question": "下列哪项是维生素C缺乏的表现？",
                                            "cop": 2, "subject_name": "生化 \"quoted\""},
            {**MM, "id": "e6", "cop": -1, "topic_name": "t\n2"},
            {**MM, "id": "e7", "cop": -2}]
    path = write_jsonl(tmp_path / "dev.jsonl", edge)
    fast, slow = _both_paths(store, path)
    assert fast.version.id == slow.version.id
    assert fast.rejects == slow.rejects == {"empty_option": 1, "answer_not_in_options": 1,
                                            "missing_field:question": 1, "duplicate_id": 1,
                                            "duplicate_record": 1, "bad_answer_index": 1}
    cols = ["file", "position", "raw", "reason", "detail"]
    assert fast.version.rejects().select(cols).to_pylist() == \
        slow.version.rejects().select(cols).to_pylist()
    rows = rows_of(fast)
    assert rows["medmcqa/default/dev/e5"]["lang"] == "zh"
    # blank and broken lines send a chunk down the careful path, with the same result
    path.write_text(path.read_text() + "\n{oops\n" + json.dumps({**MM, "id": "e9", "cop": 1}))
    fast, slow = _both_paths(store, path)
    assert fast.version.id == slow.version.id and fast.rejects == slow.rejects
    # a list or an object where text belongs (polars would read it as text): rejected alike
    typed = [{**MM, "id": "t1", "question": ["a", "b"], "cop": 1},
             {**MM, "id": "t2", "opb": {"v": "x"}, "cop": 1},
             {**MM, "id": "t3", "exp": True, "cop": 1}, {**MM, "id": "t4", "cop": 4}]
    path = write_jsonl(tmp_path / "typed.jsonl", typed)
    fast, slow = _both_paths(store, path)
    assert fast.version.id == slow.version.id
    assert fast.rejects == slow.rejects == {"wrong_type": 1, "bad_options": 1}


def test_medmcqa_vectorized_path_crlf_and_many_chunks(store, tmp_path, monkeypatch):
    import functools

    recs = [{**MM, "id": f"c{i}", "cop": 1 + i % 4} for i in range(40)]
    recs[7]["opc"] = ""  # a reject inside a vectorized chunk
    body = "\r\n".join(json.dumps(r) for r in recs) + "\r\n"
    lines = body.split("\r\n")
    lines.insert(25, "{not json")  # one chunk goes down the careful path
    path = tmp_path / "train.jsonl"
    path.write_bytes("\r\n".join(lines).encode())
    monkeypatch.setattr(convert, "_fast_chunks",
                        functools.partial(convert._fast_chunks, chunk_bytes=700))
    chunks = []
    frame = convert._Converting.frame
    monkeypatch.setattr(convert._Converting, "frame",
                        lambda self, c: chunks.append(c.first_line) or frame(self, c))
    fast, slow = _both_paths(store, path)
    assert len(chunks) > 5 and 1 in chunks  # most chunks took the vectorized path
    assert fast.version.id == slow.version.id
    assert fast.rows_in == slow.rows_in == 41 and fast.rows_out == 39
    assert fast.rejects == slow.rejects == {"empty_option": 1, "unparseable": 1}
    cols = ["file", "position", "raw", "reason"]
    assert fast.version.rejects().select(cols).to_pylist() == \
        slow.version.rejects().select(cols).to_pylist()
    assert all(len(r["raw_sha1"]) == 40 for r in rows_of(fast).values())


def test_medmcqa_vectorized_path_on_real_samples(store, samples):
    fast, slow = _both_paths(store, samples / "medmcqa" / "dev.json")
    assert fast.version.id == slow.version.id and fast.rows_out == 1000


@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=25))
def test_seen_keys_behaves_as_a_set(batches):
    import numpy as np

    seen, reference = SeenKeys(), set()
    for batch in batches:
        keys = np.array(batch, dtype=np.uint64)
        assert seen.contains(keys).tolist() == [k in reference for k in batch]
        seen.add(keys)
        reference.update(batch)
    assert sum(len(r) for r in seen.runs) == sum(len(b) for b in batches)


def test_failure_mid_conversion_stops_the_prefetch_thread(store, tmp_path, monkeypatch):
    import functools
    import threading

    path = write_jsonl(tmp_path / "train.jsonl",
                       [{**MM, "id": f"f{i}", "cop": 1 + i % 4} for i in range(60)])
    monkeypatch.setattr(convert, "_fast_chunks",
                        functools.partial(convert._fast_chunks, chunk_bytes=500))

    def broken(self, chunk):
        raise OSError("disk full")

    monkeypatch.setattr(convert._Converting, "frame", broken)
    with pytest.raises(OSError, match="disk full"):
        convert.publish(get("medmcqa")(), [str(path)], store, progress=False)
    assert not [t for t in threading.enumerate() if t.name.startswith("meddata-prefetch")]
    assert store.versions() == [] and list((store.root / ".tmp").iterdir()) == []


def test_train_and_eval_without_the_train_extra_say_what_to_install(monkeypatch, store):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("trl", "torch") else real(name, *a))
    for args in (["train", "sft", "--data", "sft/x", "--model", "m"],
                 ["eval", "--model", "m", "--bench", "canonical/x"]):
        out = CliRunner().invoke(cli, ["--store", str(store.root), *args])
        assert out.exit_code == 1
        lines = out.output.strip().splitlines()
        assert len(lines) == 1 and "needs the train extra" in lines[0], out.output
        assert 'pip install -e ".[train]"' in lines[0] and "Traceback" not in out.output


def test_convert_help_names_every_source():
    from meddata.converters import REGISTRY

    out = CliRunner().invoke(cli, ["convert", "--help"]).output
    for name in REGISTRY:
        assert name in out, f"convert --help does not name {name}"
