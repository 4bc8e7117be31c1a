"""The benchmarks and sources beyond the first six: MMLU, CMExam, CMB, Huatuo-26M and
ShareGPT dialogues, each variant on examples written in the real layouts; questions with
several correct options; multi-turn dialogues through the builders."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import EXAMPLES
from meddata import convert
from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.builders.rejected import Distractor
from meddata.converters import get


def run(store, source, paths, **kw):
    conv = get(source)(subset=kw.pop("subset", None), split=kw.pop("split", None))
    return convert.publish(conv, [str(p) for p in paths], store, progress=False,
                       max_reject_rate=kw.pop("max_reject_rate", 1.0), **kw)


def rows(result):
    return {r["id"]: r for r in result.version.to_table().to_pylist()}


# ---- MMLU ---------------------------------------------------------------------------------------
def test_mmlu_original_release_csv(store):
    res = run(store, "mmlu", [EXAMPLES / "mmlu" / "data"])
    got = rows(res)
    assert not res.rejects and len(got) == 14
    subjects = {(r["subset"], r["split"]) for r in got.values()}
    assert ("anatomy", "dev") in subjects and ("anatomy", "test") in subjects
    assert ("clinical_knowledge", "validation") in subjects  # `val` -> validation
    waiter = next(r for r in got.values() if "waiter" in r["question"])  # spans two lines
    assert waiter["question"] == ("A lesion of which structure causes a\n\"waiter's tip\" "
                                  "posture of the arm?")
    assert waiter["answer_label"] == "B" and len(waiter["options"]) == 4
    last = next(r for r in got.values() if "portal vein" in r["question"])  # no final newline
    assert last["answer"] == "Splenic and superior mesenteric veins"  # CRLF stripped
    assert all(r["id"].startswith(f"mmlu/{r['subset']}/{r['split']}/") for r in got.values())


def test_mmlu_subset_selects_subjects_by_file(store):
    res = run(store, "mmlu", [EXAMPLES / "mmlu" / "data"], subset="medical")
    assert {r["subset"] for r in rows(res).values()} == {"anatomy", "clinical_knowledge",
                                                        "professional_medicine"}
    assert res.version.manifest["convert_report"] == {"files_of_other_subjects": 1}
    res = run(store, "mmlu", [EXAMPLES / "mmlu" / "data"], subset="anatomy", name="anatomy")
    assert {r["subset"] for r in rows(res).values()} == {"anatomy"}


def test_mmlu_hugging_face_layout_jsonl_and_parquet(store, tmp_path):
    res = run(store, "mmlu", [EXAMPLES / "mmlu" / "hf"])
    got = list(rows(res).values())
    assert {r["subset"] for r in got} == {"medical_genetics", "college_medicine"}
    assert {r["split"] for r in got} == {"test"}
    cf = next(r for r in got if "cystic" in r["question"])
    assert cf["answer_label"] == "B" and cf["answer"] == "Autosomal recessive"  # index 1
    records = [json.loads(line) for line in
               (EXAMPLES / "mmlu" / "hf" / "mmlu_medical_test.jsonl").read_text().splitlines()]
    records.append({**records[0], "answer": 7})  # out of range
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    res = run(store, "mmlu", [path], name="mmlu-parquet")
    assert res.rows_out == 3 and res.rejects == {"answer_not_in_options": 1}


# ---- CMExam ---------------------------------------------------------------------------------------
def test_cmexam_csv_options_string_and_several_answers(store, tmp_path):
    res = run(store, "cmexam", [EXAMPLES / "cmexam"])
    got = list(rows(res).values())
    assert len(got) == 4 and all(r["lang"] == "zh" and r["split"] == "test" for r in got)
    mi = next(r for r in got if "心电图" in r["question"])
    assert mi["answer_label"] == "B" and [o["label"] for o in mi["options"]] == list("ABCDE")
    assert mi["options"][1]["text"] == "急性前壁心肌梗死"
    meta = json.loads(mi["meta"])
    assert meta["clinical_department"] == "心血管内科" and meta["difficulty"] == "中"
    many = next(r for r in got if "微血管" in r["question"])
    assert many["answer_label"] == "ABD"  # the whole set, never one of them
    assert many["answer"] == "糖尿病肾病; 糖尿病视网膜病变; 糖尿病周围神经病变"
    assert json.loads(many["meta"])["multiple_answers"] is True
    bad = tmp_path / "val.csv"
    bad.write_text("Question,Options,Answer,Explanation\n"
                   "题一,\"A 甲\nB 乙\",F,\n"      # a letter that is no option
                   "题二,\"甲乙丙\",A,\n"           # options without labels
                   "题三,\"A 甲\nB 乙\",\"A, B\",\n", encoding="utf-8")
    res = run(store, "cmexam", [bad], name="bad")
    assert res.rejects == {"answer_not_in_options": 1, "bad_options": 1}
    assert next(iter(rows(res).values()))["answer_label"] == "AB"


def test_cmexam_labels_only_when_unambiguous(store, tmp_path):
    path = tmp_path / "val.csv"
    path.write_text("Question,Options,Answer,Explanation\n"
                    "题一,\"A 甲\nB 乙\nC 丙\nD 丁\",Bad,\n"   # a word, not the set ABD
                    "题二,\"A 甲\nB 乙\nC 丙\nD 丁\nE 戊\nF-type reaction\",E,\n"
                    "题三,\"A 甲\nB 乙\nC丙\",AC,\n", encoding="utf-8")
    res = run(store, "cmexam", [path])
    assert res.rejects == {"bad_answer": 1}
    got = {r["question"]: r for r in rows(res).values()}
    wrapped = got["题二"]
    assert [o["label"] for o in wrapped["options"]] == list("ABCDE")  # no sixth option F
    assert wrapped["options"][4]["text"] == "戊\nF-type reaction"
    assert got["题三"]["answer_label"] == "AC" and got["题三"]["options"][2]["text"] == "丙"


def test_cmb_answer_as_a_list_of_letters(store, tmp_path):
    records = json.loads((EXAMPLES / "cmb" / "CMB-val-merge.json").read_text())
    multi = next(r for r in records if r["question_type"] == "多项选择题")
    single = next(r for r in records if r["question_type"] == "单项选择题")
    recs = [{**multi, "answer": list(multi["answer"])},
            {**single, "answer": ["A", "C"]},                    # one answer expected: a reject
            {**single, "question": single["question"] + "？", "answer": [{"x": 1}]}]
    path = tmp_path / "CMB-val.json"
    path.write_text(json.dumps(recs, ensure_ascii=False))
    res = run(store, "cmb", [path])
    [row] = rows(res).values()
    assert row["answer_label"] == multi["answer"] and len(row["answer_label"]) > 1
    assert res.rejects == {"answer_mismatch": 1, "wrong_type": 1}


def test_cmb_test_answer_key_joined_by_id(store, tmp_path):
    records = json.loads((EXAMPLES / "cmb" / "CMB-val-merge.json").read_text())
    questions = [{**{k: v for k, v in r.items() if k not in ("answer", "explanation")},
                  "id": i} for i, r in enumerate(records)]
    key = [{"id": i, **{k: r[k] for k in ("exam_type", "exam_class", "exam_subject",
                                          "question_type", "answer")}}
           for i, r in enumerate(records[:-1])]  # the last question has no answer in the key
    key.append({**key[0], "id": 999})                # an answer without a question
    folder = tmp_path / "CMB-test"
    folder.mkdir()
    (folder / "CMB-test-choice-question-merge.json").write_text(
        json.dumps(questions, ensure_ascii=False))
    (folder / "CMB-test-choice-answer.json").write_text(json.dumps(key, ensure_ascii=False))
    res = run(store, "cmb", [folder], max_reject_rate=0.0)
    got = {r["id"]: r for r in rows(res).values()}
    assert len(got) == len(records) and not res.rejects  # the key is not rows
    for i, r in enumerate(records[:-1]):
        assert got[f"cmb/exam/test/{i}"]["answer_label"] == r["answer"]
    assert got[f"cmb/exam/test/{len(records) - 1}"]["answer_label"] is None
    assert res.version.manifest["convert_report"] == {
        "answer_key_labels": len(records), "answer_key_joined": len(records) - 1,
        "answers_without_question": 1}
    questions[0]["answer"] = "E" if records[0]["answer"] != "E" else "D"
    (folder / "CMB-test-choice-question-merge.json").write_text(
        json.dumps(questions, ensure_ascii=False))
    res = run(store, "cmb", [folder], name="conflict")
    assert res.rejects == {"answer_conflict": 1}


# ---- CMB -------------------------------------------------------------------------------------------
def test_cmb_exam_and_clin(store, tmp_path):
    res = run(store, "cmb", [EXAMPLES / "cmb"])
    got = rows(res)
    exam = [r for r in got.values() if r["subset"] == "exam"]
    clin = [r for r in got.values() if r["subset"] == "clin"]
    assert len(exam) == 3 and len(clin) == 5
    assert {r["split"] for r in exam} == {"val"} and {r["split"] for r in clin} == {"test"}
    acei = next(r for r in exam if "转换酶" in r["question"])
    assert acei["answer_label"] == "AC" and json.loads(acei["meta"])["question_type"] == "多项选择题"
    pair = got["cmb/clin/test/0-2"]
    assert pair["task"] == "open_qa" and pair["context"].startswith("患者男性，62岁")
    assert pair["question"] == "应进行哪些检查以明确诊断？" and "超声心动图" in pair["response"]
    assert json.loads(pair["meta"]) == {"case_id": "0", "pair": 2, "title": "案例分析-心血管内科"}
    # a single-answer question with several letters, and a case with one bad pair
    records = json.loads((EXAMPLES / "cmb" / "CMB-val-merge.json").read_text())
    records[0] = {**records[0], "answer": "AB"}
    folder = tmp_path / "cmb"
    folder.mkdir()
    (folder / "CMB-val-merge.json").write_text(json.dumps(records, ensure_ascii=False))
    cases = json.loads((EXAMPLES / "cmb" / "CMB-Clin-qa.json").read_text())
    cases[1]["QA_pairs"][0] = {"question": "", "answer": "x"}
    (folder / "CMB-Clin-qa.json").write_text(json.dumps(cases, ensure_ascii=False))
    res = run(store, "cmb", [folder], name="cmb-bad")
    assert res.rejects == {"answer_mismatch": 1, "missing_field:question": 1}
    assert res.rows_out == 6


# ---- Huatuo-26M --------------------------------------------------------------------------------------
def test_huatuo26m_lite_and_paraphrased_questions(store, tmp_path):
    res = run(store, "huatuo26m", [EXAMPLES / "huatuo26m"])
    got = rows(res)
    assert len(got) == 6 and all(r["task"] == "open_qa" and r["lang"] == "zh"
                                 for r in got.values())
    lite = got["huatuo26m/lite/train/1001"]
    assert json.loads(lite["meta"]) == {"department": "心血管内科", "related_diseases": "高血压",
                                        "score": 5}
    para = next(r for r in got.values() if r["question"] == "胃溃疡有什么症状？")
    assert json.loads(para["meta"])["paraphrases"] == ["胃溃疡的临床表现有哪些？"]
    anemia = [r for r in got.values() if r["question"] == "缺铁性贫血怎么治疗？"]
    assert len(anemia) == 2 and len({r["response"] for r in anemia}) == 2  # one row an answer
    (tmp_path / "test.jsonl").write_text(
        json.dumps({"questions": "头痛怎么办？", "answers": "注意休息。"}, ensure_ascii=False)
        + "\n" + json.dumps({"questions": [], "answers": ["x"]}) + "\n"
        + json.dumps({"question": "q", "answer": ""}) + "\n", encoding="utf-8")
    res = run(store, "huatuo26m", [tmp_path / "test.jsonl"], name="h-test")
    assert res.rows_out == 1 and res.rejects == {"missing_field:questions": 1,
                                                 "missing_field:answer": 1}


# ---- ShareGPT dialogues ------------------------------------------------------------------------------
def test_sharegpt_and_messages_layouts(store):
    res = run(store, "sharegpt", [EXAMPLES / "sharegpt"])
    got = rows(res)
    d1 = got["sharegpt/default/train/d1"]
    assert d1["task"] == "dialogue" and [t["role"] for t in d1["turns"]] == [
        "system", "user", "assistant", "user", "assistant"]
    assert d1["question"].startswith("I have had a headache")
    assert d1["response"].startswith("Then a tension-type headache")
    assert got["sharegpt/default/train/d2"]["lang"] == "zh"
    m2 = got["sharegpt/default/train/m2"]
    assert [t["role"] for t in m2["turns"]] == ["system", "user", "assistant"]


@pytest.mark.parametrize("turns,reason", [
    ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
      {"from": "gpt", "value": "c"}], "bad_turn_order"),
    ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "  "}], "empty_turn"),
    ([{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}], "bad_role"),
    ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}], "bad_turn_order"),
    ([{"from": "human", "value": "a"}], "bad_turn_order"),
    ([{"from": "human", "value": "a"}, {"from": "system", "value": "s"},
      {"from": "gpt", "value": "b"}], "bad_turn_order"),
])
def test_dialogue_turn_errors_are_rejects(store, tmp_path, turns, reason):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"conversations": turns}) + "\n" + json.dumps(
        {"conversations": [{"from": "human", "value": "ok?"}, {"from": "gpt", "value": "ok"}]})
        + "\n")
    res = run(store, "sharegpt", [path])
    assert res.rows_out == 1 and res.rejects == {reason: 1}


# ---- through the builders ------------------------------------------------------------------------------
def recipe_for(*sources, **over):
    return recipe_mod.from_dict({"name": "t", "sources": [
        {"source": s, "paths": [str(EXAMPLES / s)], "split": ["train", "test", "val"]}
        for s in sources], **over})


def test_sft_keeps_whole_dialogues_and_names_every_correct_letter(store):
    v = pipeline.build("sft", recipe_for("sharegpt", "cmexam"), store, progress=False)
    got = {r["id"]: r for r in v.to_table().to_pylist()}
    d1 = got["sharegpt/default/train/d1"]["messages"]
    assert [m["role"] for m in d1] == ["system", "user", "assistant", "user", "assistant"]
    multi = next(r for r in got.values() if "微血管" in r["messages"][0]["content"])
    answer = multi["messages"][-1]["content"]
    assert answer.startswith("答案是A、B、D。糖尿病肾病；糖尿病视网膜病变；糖尿病周围神经病变")
    from meddata.evaluation.answers import extract_letters

    assert extract_letters(answer, "ABCDE") == "ABD"
    assert v.manifest["validation"]["success"]


def test_prompts_keep_the_answer_set_and_the_dialogue(store):
    v = pipeline.build("prompts", recipe_for("sharegpt", "cmb"), store, progress=False)
    got = {r["id"]: r for r in v.to_table().to_pylist()}
    acei = next(r for r in got.values() if "转换酶" in r["prompt"][-1]["content"])
    assert acei["answer_label"] == "AC"
    d2 = got["sharegpt/default/train/d2"]["prompt"]
    assert [m["role"] for m in d2] == ["user", "assistant", "user"]  # up to the last user turn


def test_distractor_for_several_answers_is_a_wrong_set():
    from meddata.evaluation.answers import extract_letters

    recipe = pipeline.examples_recipe()
    opts = [{"label": c, "text": t} for c, t in zip("ABCDE", "甲乙丙丁戊")]
    for i in range(20):
        row = {"id": f"m{i}", "task": "mcq", "lang": "zh", "answer_label": "ABD",
               "answer": "甲; 乙; 丁", "options": opts}
        text = Distractor(recipe).one(row)
        letters = extract_letters(text, "ABCDE")
        assert letters and letters != "ABD"


def test_preference_from_dialogues_uses_cross_sample(store):
    v = pipeline.build("preference", recipe_for("sharegpt"), store, progress=False)
    got = v.to_table().to_pylist()
    assert {r["rejected_by"] for r in got} == {"cross_sample"}
    assert all(r["prompt"][-1]["role"] == "user" for r in got)
