"""The forgetting check's general benchmarks: MMLU's subject groups, C-Eval and CMMLU in
their original CSV layouts (examples written by us), and the stage table that sets
medical and general benchmarks side by side."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from meddata import convert
from meddata.cli import cli
from meddata.converters import get


def run(store, source, paths, **kw):
    conv = get(source)(subset=kw.pop("subset", None))
    return convert.publish(conv, [str(p) for p in paths], store, progress=False,
                       max_reject_rate=kw.pop("max_reject_rate", 1.0), **kw)


def rows(result):
    return {r["id"]: r for r in result.version.to_table().to_pylist()}


# ---- C-Eval ---------------------------------------------------------------------------------------
def test_ceval_original_release_csv(store):
    res = run(store, "ceval", [EXAMPLES / "ceval"])
    got = rows(res)
    assert not res.rejects and len(got) == 20
    assert {(r["subset"], r["split"]) for r in got.values()} == {
        ("computer_network", "dev"), ("computer_network", "validation"),
        ("basic_medicine", "dev"), ("basic_medicine", "validation"), ("basic_medicine", "test")}
    assert all(r["lang"] == "zh" and r["task"] == "mcq" for r in got.values())
    dev = got["ceval/computer_network/dev/3"]  # an explanation over two lines
    assert dev["answer_label"] == "B" and dev["answer"] == "192.168.1.10"
    assert dev["rationale"].startswith("1. 私有地址段") and "\n2. 172.32.0.1" in dev["rationale"]
    meta = json.loads(dev["meta"])
    assert meta == {"subject": "computer_network", "subject_zh": "计算机网络",
                    "category": "stem", "domain": "general"}
    val = got["ceval/computer_network/validation/0"]  # an empty explanation column
    assert val["rationale"] is None and val["answer_label"] == "C"
    med = got["ceval/basic_medicine/validation/2"]  # a file without the explanation column
    assert med["answer"] == "下丘脑" and json.loads(med["meta"])["domain"] == "medical"
    test = got["ceval/basic_medicine/test/0"]  # labels never released: kept unanswered
    assert test["answer_label"] is None and len(test["options"]) == 4


def test_ceval_bad_answers_and_files(store, tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    (folder / "physician_val.csv").write_text(
        "id,question,A,B,C,D,answer,explanation\n"
        "0,问题一,甲,乙,丙,丁,E,\n"          # not a letter A-D
        "1,问题二,甲,乙,,丁,A,\n"            # an empty option
        "2,问题三,甲,乙,丙,丁,D,\n", encoding="utf-8")
    res = run(store, "ceval", [folder])
    assert res.rows_out == 1 and res.rejects == {"bad_answer": 1, "empty_option": 1}
    (tmp_path / "notes.jsonl").write_text('{"question": "x"}\n')  # no subject in its name
    res = run(store, "ceval", [tmp_path / "notes.jsonl"], name="x")
    assert res.rows_out == 0 and res.rejects == {"missing_field:subject": 1}


def test_ceval_hugging_face_layout(store, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "clinical_medicine"
    folder.mkdir()
    records = [{"id": 0, "question": "急性心肌梗死最常见的死亡原因是____。", "A": "心律失常",
                "B": "心源性休克", "C": "心力衰竭", "D": "心脏破裂", "answer": "A",
                "explanation": ""}]
    pq.write_table(pa.Table.from_pylist(records), folder / "val-00000-of-00001.parquet")
    got = list(rows(run(store, "ceval", [folder], name="hf")).values())
    assert [(r["id"], r["answer"]) for r in got] == [
        ("ceval/clinical_medicine/validation/0", "心律失常")]
    assert json.loads(got[0]["meta"])["domain"] == "medical"


# ---- CMMLU ----------------------------------------------------------------------------------------
def test_cmmlu_original_release_csv(store, tmp_path):
    res = run(store, "cmmlu", [EXAMPLES / "cmmlu"])
    got = rows(res)
    assert not res.rejects and len(got) == 17
    assert {(r["subset"], r["split"]) for r in got.values()} == {
        ("anatomy", "dev"), ("anatomy", "test"), ("high_school_physics", "dev"),
        ("high_school_physics", "test")}
    r = got["cmmlu/anatomy/test/2"]  # the row number of the unnamed first column is the id
    assert r["question"] == "开口于上鼻道的鼻旁窦是" and r["answer"] == "后筛窦"
    assert json.loads(r["meta"]) == {"subject": "anatomy", "subject_zh": "解剖学",
                                     "category": "stem", "domain": "medical"}
    assert json.loads(got["cmmlu/high_school_physics/test/0"]["meta"])["domain"] == "general"
    test = tmp_path / "data" / "test"
    test.mkdir(parents=True)
    (test / "virology.csv").write_text(",Question,A,B,C,D,Answer\n0,问,甲,乙,丙,丁,\n"
                                       "1,问二,甲,乙,丙,丁,AB\n2,问三,甲,乙,丙,丁,C\n",
                                       encoding="utf-8")
    res = run(store, "cmmlu", [tmp_path / "data"], name="bad")
    assert res.rows_out == 1 and res.rejects == {"missing_field:Answer": 1, "bad_answer": 1}
    (test / "virology.csv").unlink()  # the same fields as JSON Lines, an `id` field
    (test / "nutrition.jsonl").write_text(json.dumps(
        {"id": 7, "Question": "缺乏维生素C会导致", "A": "坏血病", "B": "夜盲症", "C": "佝偻病",
         "D": "脚气病", "Answer": "A"}, ensure_ascii=False) + "\n", encoding="utf-8")
    got = rows(run(store, "cmmlu", [tmp_path / "data"], name="jsonl"))
    assert list(got) == ["cmmlu/nutrition/test/7"]


# ---- subject groups -------------------------------------------------------------------------------
def test_subject_groups_select_files(store):
    def subsets(source, paths, subset):
        name = f"{source}-{subset.replace(',', '_')}"
        res = run(store, source, paths, subset=subset, name=name)
        return {r["subset"] for r in rows(res).values()}, res.version.manifest

    mmlu = [EXAMPLES / "mmlu" / "data"]
    got, manifest = subsets("mmlu", mmlu, "general")
    assert got == {"astronomy"}
    assert manifest["convert_report"] == {"files_of_other_subjects": 4}
    assert subsets("mmlu", mmlu, "stem")[0] == {"anatomy", "astronomy"}
    assert subsets("mmlu", mmlu, "other")[0] == {"clinical_knowledge", "professional_medicine"}
    assert subsets("mmlu", mmlu, "humanities,astronomy")[0] == {"astronomy"}
    assert subsets("ceval", [EXAMPLES / "ceval"], "medical")[0] == {"basic_medicine"}
    assert subsets("ceval", [EXAMPLES / "ceval"], "stem")[0] == {"computer_network"}
    assert subsets("cmmlu", [EXAMPLES / "cmmlu"], "general")[0] == {"high_school_physics"}
    with pytest.raises(convert.ConversionError, match="'stems' is neither a subject nor a "
                                                      "group; groups: medical, general, stem"):
        run(store, "mmlu", mmlu, subset="stems", name="bad")


# ---- the stage table ------------------------------------------------------------------------------
def test_domain_means_and_change_from_the_base_row():
    from meddata.evaluation import output as ev

    def result(domain, acc, n=10):
        return {"domain": domain, "accuracy": acc, "ci95": [0.0, 1.0], "items": n}

    report = {"benchmarks": ["canonical/cmmlu@1", "canonical/medqa@2", "canonical/ceval@3"],
              "models": [
                  {"model": "base", "trained_on": [], "results": {
                      "canonical/cmmlu@1": result("general", 0.50),
                      "canonical/medqa@2": result("medical", 0.30),
                      "canonical/ceval@3": result("general", 0.40)}},
                  {"model": "runs/sft", "trained_on": ["sft/x@9"], "results": {
                      "canonical/cmmlu@1": result("general", 0.40),
                      "canonical/medqa@2": result("medical", 0.45),
                      "canonical/ceval@3": result("general", 0.30)}}]}
    head, _, base, trained = ev.markdown(report).splitlines()
    assert head == ("| model | trained on | canonical/medqa@2 (medical) | canonical/cmmlu@1 "
                    "(general) | canonical/ceval@3 (general) | medical mean | general mean |")
    assert base.endswith("| 30.0 | 45.0 |")
    assert trained.endswith("| 45.0 (+15.0) | 35.0 (-10.0) |")  # forgetting: -10 points


def test_eval_shows_medical_and_general_side_by_side(tmp_path, tiny):
    pytest.importorskip("torch")
    runner = CliRunner()
    s = ["--store", str(tmp_path / "store")]
    for source, name in (("medqa", "medqa"), ("ceval", "ceval-general")):
        extra = ["--subset", "general"] if source == "ceval" else []
        out = runner.invoke(cli, s + ["convert", source, str(EXAMPLES / source), "--name",
                                      name, "--quiet", *extra])
        assert out.exit_code == 0, out.output
    out = runner.invoke(cli, s + ["eval", "--model", tiny, "--model", tiny, "--bench",
                                  "canonical/ceval-general", "--bench", "canonical/medqa",
                                  "--split", "all", "--quiet", "--out", str(tmp_path / "e")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "e" / "results.json").read_text())
    domains = {ref.split("@")[0]: r["domain"] for ref, r in report["models"][0]["results"].items()}
    assert domains == {"canonical/ceval-general": "general", "canonical/medqa": "medical"}
    lines = out.output.splitlines()
    head = next(line for line in lines if line.startswith("| model"))
    assert head.index("canonical/medqa@") < head.index("canonical/ceval-general@")
    assert "(medical)" in head and "(general)" in head and head.endswith(
        "| medical mean | general mean |")
    second = [line for line in lines if line.startswith(f"| {tiny}")][1]
    assert second.count("(+0.0)") == 2  # the same model twice: no change
