"""Fault injection: one bad record costs that record, never the rest (JSON, JSON Lines,
CSV, text); both MedMCQA paths reject the same records."""

from __future__ import annotations

import json

import pytest

from conftest import EXAMPLES
from meddata import convert
from meddata.converters import get
from meddata.readers import json_elements


def run(store, source, paths, **kw):
    conv = get(source)(subset=kw.pop("subset", None), split=kw.pop("split", None),
                       **{k: kw.pop(k) for k in list(kw) if k == "cop_base"})
    return convert.publish(conv, [str(p) for p in paths], store, progress=False,
                       max_reject_rate=kw.pop("max_reject_rate", 1.0), **kw)


def rejects(result):
    return result.version.rejects().to_pylist()


def pubmedqa_records(n: int) -> dict[str, dict]:
    return {str(10_000 + i): {"QUESTION": f"Does treatment {i} shorten the stay after surgery?",
                              "CONTEXTS": [f"Background {i}.", f"Results {i}: it did."],
                              "LABELS": ["BACKGROUND", "RESULTS"], "MESHES": ["Surgery"],
                              "YEAR": "2020", "final_decision": ["yes", "no", "maybe"][i % 3],
                              "LONG_ANSWER": f"Treatment {i} shortened the stay."}
            for i in range(n)}


# ---- JSON arrays and objects keyed by id ------------------------------------------------------------
def test_json_object_one_invalid_byte_costs_one_record(store, tmp_path):
    data = json.dumps(pubmedqa_records(200), indent=1).encode()
    marker = b"Does treatment 19 shorten"
    data = data.replace(marker, b"Does treatm\xe9nt 19 shorten")  # Latin-1, not UTF-8
    path = tmp_path / "ori_pqal.json"
    path.write_bytes(data)
    result = run(store, "pubmedqa", [path])
    assert result.rows_in == 200 and result.rows_out == 199
    [rej] = rejects(result)
    assert rej["position"] == 20 and rej["reason"] == "unparseable"
    assert "not UTF-8" in rej["detail"]
    assert '"10019"' in rej["raw"] and "treatm\ufffdnt 19" in rej["raw"]  # its real text
    assert "pubmedqa/labeled/train/10020" in {r["id"] for r in
                                              result.version.to_table(columns=["id"]).to_pylist()}


def test_json_array_broken_record_and_trailing_comma(store, tmp_path):
    records = [{"instruction": f"Question {i} about hypertension?", "output": f"Answer {i}."}
               for i in range(30)]
    text = json.dumps(records, indent=1)
    text = text.replace('"output": "Answer 7."', '"output": "Answer 7." oops')
    text = text[:text.rstrip().rfind("]")].rstrip() + ",\n]"  # a trailing comma
    path = tmp_path / "hwtcm.json"
    path.write_text(text, encoding="utf-8")
    result = run(store, "hwt_cm", [path])
    assert result.rows_in == 30 and result.rows_out == 29  # no record invented by the comma
    [rej] = rejects(result)
    assert rej["position"] == 8 and rej["reason"] == "unparseable"
    assert "Answer 7." in rej["raw"] and "oops" in rej["raw"]


def test_json_elements_scan_is_string_aware(tmp_path):
    path = tmp_path / "a.json"
    tricky = ['{"a": "x, ] } [ {"}', '{"b": "\\"quoted\\", \\\\"}', '[1, [2, 3]]', '"s,\\\\"']
    path.write_text("[" + ", ".join(tricky) + "]")
    for block in (3, 7, 1 << 20):  # strings and escapes cut at every block boundary
        got = [(e.decode().strip(), err) for e, err in json_elements(path, "array", block)]
        assert got == [(t, None) for t in tricky]


def test_deeply_nested_record_is_a_reject(store, tmp_path):
    deep = "[" * 20_000 + "]" * 20_000
    good = {"instruction": "What lowers blood pressure?", "output": "Less salt."}
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps(good) + "\n" + '{"instruction": ' + deep + "}\n"
                     + json.dumps({**good, "output": "Exercise."}) + "\n")
    array = tmp_path / "b.json"
    array.write_text("[" + json.dumps(good) + ", " + deep + ", "
                     + json.dumps({**good, "output": "Exercise."}) + "]")
    for path in (jsonl, array):
        result = run(store, "hwt_cm", [path], name=path.stem)
        assert result.rows_in == 3 and result.rows_out == 2
        [rej] = rejects(result)
        assert rej["position"] == 2 and rej["reason"] == "unparseable"
        assert "nested too deeply" in rej["detail"] and rej["raw"].count("[") > 1000


@pytest.mark.parametrize("layout", ["jsonl", "array", "object", "csv"])
def test_bom_is_not_data(store, tmp_path, layout):
    if layout == "csv":
        src = (EXAMPLES / "chinese_medical_dialogue" / "样例_内科.csv").read_bytes()
        text = src.decode("gb18030").encode("utf-8")
        source, path = "chinese_medical_dialogue", tmp_path / "dialogue.csv"
    else:
        records = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(5)]
        source, path = "hwt_cm", tmp_path / f"a.{'jsonl' if layout == 'jsonl' else 'json'}"
        text = ("\n".join(json.dumps(r) for r in records) if layout == "jsonl" else
                json.dumps(records) if layout == "array" else
                json.dumps({f"k{i}": r for i, r in enumerate(records)})).encode()
    path.write_bytes(text)
    plain = run(store, source, [path], name=f"plain-{layout}")
    path.write_bytes(b"\xef\xbb\xbf" + text)
    bom = run(store, source, [path], name=f"bom-{layout}")
    assert not bom.rejects and bom.rows_out == plain.rows_out > 0
    assert bom.version.id == plain.version.id


def test_empty_file_says_which(store, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(convert.ConversionError, match=r"empty\.json is empty"):
        run(store, "hwt_cm", [empty])
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"instruction": "Q?", "output": "A."}) + "\n")
    result = run(store, "hwt_cm", [empty, good])
    assert result.rows_out == 1 and not result.rejects
    assert result.version.manifest["convert_report"]["empty_files"] == [str(empty)]


# ---- CSV ---------------------------------------------------------------------------------------------
def dialogue_csv(n: int) -> str:
    rows = ["department,title,ask,answer"]
    rows += [f"内科,标题{i},第{i}个问题：高血压能喝茶吗？,第{i}个回答：可以适量饮用淡茶。" for i in range(n)]
    return "\n".join(rows) + "\n"


def test_csv_one_stray_byte_does_not_flip_the_file(store, tmp_path):
    data = dialogue_csv(50).encode("utf-8")
    data = data.replace("第7个回答".encode(), "第7个".encode() + b"\xff" + "回答".encode())
    path = tmp_path / "dialogue.csv"
    path.write_bytes(data)
    result = run(store, "chinese_medical_dialogue", [path])
    assert result.rows_out == 49
    [rej] = rejects(result)
    assert rej["position"] == 9 and "not utf-8" in rej["detail"] and "\ufffd" in rej["raw"]
    answers = {r["response"] for r in result.version.to_table(columns=["response"]).to_pylist()}
    assert "第8个回答：可以适量饮用淡茶。" in answers  # decoded as UTF-8, not mojibake


def test_csv_gb18030_file_stays_gb18030(store, tmp_path):
    path = tmp_path / "dialogue.csv"
    path.write_bytes(dialogue_csv(20).encode("gb18030"))
    result = run(store, "chinese_medical_dialogue", [path])
    assert result.rows_out == 20 and not result.rejects


def test_csv_unbalanced_quote_costs_only_its_line(store, tmp_path):
    lines = dialogue_csv(300).splitlines()
    lines[10] = '内科,"标题9,第9个问题？,第9个回答。'  # the quote never closes
    path = tmp_path / "dialogue.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(store, "chinese_medical_dialogue", [path])
    assert result.rows_in == 300 and result.rows_out == 299
    [rej] = rejects(result)
    assert rej["position"] == 11 and "does not close" in rej["detail"]
    assert rej["raw"] == lines[10]


def test_csv_multiline_field_still_works_and_wrong_field_count_resyncs(store, tmp_path):
    lines = dialogue_csv(6).splitlines()
    lines[2] = '内科,标题,"第一行\n第二行",回答。'
    lines[4] = '内科,"a\nb",only three'  # a closed quote, but a broken record over two lines
    path = tmp_path / "dialogue.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(store, "chinese_medical_dialogue", [path])
    asks = {r["question"] for r in result.version.to_table(columns=["question"]).to_pylist()}
    assert "第一行\n第二行" in asks
    assert [r["reason"] for r in rejects(result)] == ["unparseable", "unparseable"]
    assert all(r["raw"] for r in rejects(result))


def test_csv_huge_field_reject_keeps_its_raw(store, tmp_path):
    lines = dialogue_csv(4).splitlines()
    lines[2] = '内科,标题,"' + ("很长的字段\n" * 200_000)  # over a megabyte, never closed
    path = tmp_path / "dialogue.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(store, "chinese_medical_dialogue", [path])
    assert result.rows_out == 3  # the rows before and after it
    assert all(r["raw"] for r in rejects(result))
    assert rejects(result)[0]["position"] == 3


# ---- types and answer indices -------------------------------------------------------------------------
MM = {"question": "Which vitamin deficiency causes scurvy?", "opa": "Vitamin A",
      "opb": "Vitamin C", "opc": "Vitamin D", "opd": "Vitamin K", "choice_type": "single",
      "exp": "Vitamin C is needed for collagen.", "subject_name": "Biochemistry",
      "topic_name": "Vitamins"}


def test_answer_indices_outside_the_options_are_rejects(store, tmp_path):
    recs = [{**MM, "id": "m1", "cop": -1}, {**MM, "id": "m2", "cop": None},
            {**{k: v for k, v in MM.items()}, "id": "m3"}, {**MM, "id": "m4", "cop": 0},
            {**MM, "id": "m5", "cop": -2}, {**MM, "id": "m6", "cop": 5},
            {**MM, "id": "m7", "cop": True}, {**MM, "id": "m8", "cop": [2]},
            {**MM, "id": "m9", "cop": {"v": 2}}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    for fast in (True, False):
        conv = get("medmcqa")()
        conv.fast = fast
        result = convert.publish(conv, [str(path)], store, name=f"idx-{fast}", max_reject_rate=1.0,
                             progress=False)
        rows = {r["id"].rsplit("/", 1)[1]: r["answer_label"]
                for r in result.version.to_table(columns=["id", "answer_label"]).to_pylist()}
        assert rows == {"m1": None, "m2": None, "m3": None, "m4": "A"}
        by_id = {json.loads(r["raw"])["id"]: r["reason"] for r in rejects(result)}
        assert by_id == {"m5": "bad_answer_index", "m6": "answer_not_in_options",
                         "m7": "wrong_type", "m8": "wrong_type", "m9": "wrong_type"}


def test_real_pubmedqa_sample_with_a_latin1_byte(store, tmp_path, samples):
    data = (samples / "pubmedqa" / "ori_pqal.json").read_bytes()
    records = json.loads(data)
    key = list(records)[19]
    question = records[key]["QUESTION"].encode()
    at = data.index(question)
    path = tmp_path / "ori_pqal.json"
    path.write_bytes(data[:at + 2] + b"\xe9" + data[at + 3:])
    result = run(store, "pubmedqa", [path])
    assert result.rows_in == len(records) == 200 and result.rows_out == 199
    [rej] = rejects(result)
    assert rej["position"] == 20 and key in rej["raw"]
