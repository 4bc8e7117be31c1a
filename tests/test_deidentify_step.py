"""The `deidentify` step: edits every text column, option and dialogue turn, never drops,
counts by entity type, reports placeholder-only examples, and writes no original value
anywhere in the new version (rows, rejects, report, manifest, card, command output); the
same version on the local engine and on Ray."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from meddata import canonical
from meddata.cli import cli
from meddata.engines.local import run_rows
from meddata.schema import CANONICAL
from meddata.steps import registry
from meddata.steps.base import StepError
from meddata.steps.registry import Context, SettingsError, parse_list

SALT = "0123456789abcdef0123456789abcdef"
SAMPLE_CSV = (Path(__file__).resolve().parents[2] / "shared" / "samples" / "raw"
              / "chinese_medical_dialogue" / "样例_内科5000-6000.csv")

# planted identifiers: none of them may appear in the new version
PLANTED = ["赵建国", "13912345678", "11010519491231002X", "ZY2023000123", "lihua88@qq.com",
           "6222021234567890128", "文三路478号", "1985年3月12日", "Robert Brown", "219-09-9999",
           "(212) 867-5309", "00123456", "10.0.0.254", "www.myblog.net/posts/12",
           "1234 Oak Street"]
CLINICAL = ["血压150/95mmHg", "阿莫西林0.5g", "38.5℃", "ICD-10编码I10", "帕金森病",
            "BP 140/90 mmHg", "metformin 500 mg", "ICD-10 E11.9", "Parkinson's disease",
            "a 67-year-old woman"]


def row(i, question, context=None, response=None, options=(), turns=None, lang="zh"):
    r = {"id": f"t/{i}", "source": "test", "subset": "s", "split": "train", "lang": lang,
         "task": "open_qa" if not options else "mcq", "question": question, "context": context,
         "options": [{"label": lab, "text": t} for lab, t in options], "answer_label": None,
         "answer": None, "rationale": None, "response": response, "meta": "{}",
         "raw_sha1": f"{i:040x}"}
    if "turns" in CANONICAL.names:
        r["turns"] = None if turns is None else [{"role": role, "content": c}
                                                 for role, c in turns]
    return r


def rows():
    return [
        row(0, "我叫赵建国，血压150/95mmHg，手机13912345678，怎么办？",
            response="建议服用阿莫西林0.5g，体温38.5℃时复诊。",
            turns=[("user", "身份证号11010519491231002X，住院号：ZY2023000123"),
                   ("assistant", "请把报告发到lihua88@qq.com，ICD-10编码I10。")]),
        row(1, "家住浙江省杭州市西湖区文三路478号，出生日期：1985年3月12日，帕金森病怎么治？",
            context="退款到银行卡6222021234567890128。"),
        row(2, "Mr. Robert Brown, SSN 219-09-9999, call (212) 867-5309. BP 140/90 mmHg.",
            options=[("A", "metformin 500 mg"), ("B", "MRN: 00123456")], lang="en"),
        row(3, "Login from IP 10.0.0.254; see www.myblog.net/posts/12. ICD-10 E11.9",
            response="I live at 1234 Oak Street. Parkinson's disease in a 67-year-old woman.",
            lang="en"),
        row(4, "头痛三天怎么办？", response="多喝水，注意休息。"),
    ]


def table(rs):
    return pa.Table.from_pylist(rs, schema=CANONICAL)


def make(settings=None, store=None):
    spec, = parse_list([{"deidentify": settings or {}}], "steps")
    return spec.make(Context(store))


def test_edits_every_text_and_drops_nothing(tmp_path):
    out, ledger = run_rows([make()], rows(), CANONICAL, tmp_path)
    assert [r["id"] for r in out] == [r["id"] for r in rows()]
    assert not ledger.rejects
    text = json.dumps(out, ensure_ascii=False)
    for value in PLANTED:
        assert value not in text, value
    for value in CLINICAL:
        assert value in text, value
    assert out[4] == rows()[4]
    assert out[2]["options"][0]["text"] == "metformin 500 mg"
    assert out[2]["options"][1]["text"] == "MRN: [RECORD]"
    assert out[0]["question"] == "我叫[NAME]，血压150/95mmHg，手机[PHONE]，怎么办？"
    stage, = ledger.stages()
    assert stage["dropped"] == {} and stage["rows_out"] == 5 and stage["rows_changed"] == 4
    assert stage["edited"]["phone"] == 2 and stage["edited"]["name"] == 2
    assert set(stage["edited"]) >= {"id_number", "record_number", "email", "bank_card",
                                     "address", "birth_date", "ssn", "ip", "url"}


def test_report_shape_and_examples_hold_no_value(tmp_path):
    step = make({"examples": 3})
    run_rows([step], rows(), CANONICAL, tmp_path)
    rep = step.report()
    assert set(rep) == {"mode", "entities", "total", "rows_changed", "texts_changed",
                        "columns", "placeholders", "examples"}
    assert rep["mode"] == "placeholder" and rep["rows_changed"] == 4
    assert rep["total"] == sum(rep["entities"].values()) >= len(PLANTED)
    assert len(rep["examples"]) == 3 and all("[" in e["text"] for e in rep["examples"])
    dumped = json.dumps(rep, ensure_ascii=False)
    for value in PLANTED:
        assert value not in dumped, value


def test_settings_are_checked():
    for bad, message in (({"mode": "hash"}, "mode"), ({"entities": ["shoe"]}, "unknown type"),
                         ({"max_age": 200}, "max_age"), ({"modes": "x"}, "did you mean")):
        with pytest.raises(SettingsError, match=message):
            parse_list([{"deidentify": bad}], "steps")
    assert "deidentify" in registry.names()
    assert "placeholder" in registry.help_text("deidentify")


def test_pseudonym_mode_needs_the_salt_and_is_consistent(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDDATA_DEID_SALT", raising=False)
    with pytest.raises(StepError, match=r"MEDDATA_DEID_SALT is not set"):
        make({"mode": "pseudonym"})
    monkeypatch.setenv("MEDDATA_DEID_SALT", SALT)
    rs = rows() + [row(5, "我叫赵建国，复诊。")]
    out, _ = run_rows([make({"mode": "pseudonym"})], rs, CANONICAL, tmp_path)
    fake = out[0]["question"][2:out[0]["question"].index("，")]
    assert fake != "赵建国" and out[5]["question"] == f"我叫{fake}，复诊。"
    text = json.dumps(out, ensure_ascii=False)
    for value in PLANTED:
        assert value not in text, value
    assert SALT not in text


def all_text(folder: Path) -> str:
    """Every file of a version folder as text: parquet files decoded (every column of every
    row as JSON), the rest as bytes decoded leniently."""
    parts = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            parts.append(json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False,
                                    default=str))
        parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


def test_no_original_value_anywhere_in_the_published_version(store, tmp_path, monkeypatch):
    parent = store.publish("canonical", "raw", CANONICAL, [table(rows())])
    assert "赵建国" in all_text(parent.path)  # the test can see a value when it is there
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump([{"deidentify": {}}]))
    out = CliRunner().invoke(cli, ["--store", str(store.root), "curate", "canonical/raw",
                                   "--steps", str(steps), "--name", "clean", "--quiet"])
    assert out.exit_code == 0, out.output
    version = store.resolve("canonical/clean")
    text = all_text(version.path) + out.output
    for value in PLANTED:
        assert value not in text, value
    for value in CLINICAL:
        assert value in text, value
    assert version.rows == 5 and len(version.rejects()) == 0
    stage = next(s for s in version.manifest["stages"] if s["stage"] == "deidentify")
    assert stage["edited"]["phone"] == 2
    assert version.manifest["deidentify"]["entities"] == stage["edited"]
    # and `meddata validate` finds nothing left in it
    out = CliRunner().invoke(cli, ["--store", str(store.root), "validate", "canonical/clean"])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(cli, ["--store", str(store.root), "validate", "canonical/raw",
                                   "--max-identifiers", "0"])
    assert out.exit_code == 1 and "identifiers_left" in out.output


def test_steps_before_deidentify_leak_nothing(store, tmp_path):
    """normalize's before/after examples and the rows language drops (into the rejects)
    are written about rows that still hold their identifiers: they are scrubbed too, and
    the report page shows none of them."""
    from meddata import report

    dirty = rows()
    dirty[0]["question"] = "我叫赵建国，手机13912345678，&amp; 血压150/95mmHg怎么办？"  # an HTML entity
    dirty.append(row(5, "Bonjour, je suis Mr. Robert Brown, mon téléphone est le (212) "
                        "867-5309, j'ai de la fièvre depuis trois jours et une toux sèche.",
                     lang="en"))
    store.publish("canonical", "raw", CANONICAL, [table(dirty)])
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump([{"normalize": {}}, {"language": {"keep": ["en", "zh"]}},
                                     {"deidentify": {}}]))
    out = CliRunner().invoke(cli, ["--store", str(store.root), "curate", "canonical/raw",
                                   "--steps", str(steps), "--name", "clean", "--quiet"])
    assert out.exit_code == 0, out.output
    version = store.resolve("canonical/clean")
    stages = {s["stage"]: s for s in version.manifest["stages"]}
    assert stages["normalize"]["rows_changed"] >= 1  # the entity was decoded: an example
    assert sum(stages["language"]["dropped"].values()) == 1  # the French row: a reject
    assert len(version.rejects()) == 1
    text = all_text(version.path) + out.output + report.render(version, store)
    for value in PLANTED:
        assert value not in text, value


def test_pseudonymized_version_holds_no_value_and_validates(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDDATA_DEID_SALT", SALT)
    store.publish("canonical", "raw", CANONICAL, [table(rows())])
    v = canonical.curate(store, "canonical/raw", [{"deidentify": {"mode": "pseudonym"}}],
                         "pseudo")
    text = all_text(v.path)
    for value in [*PLANTED, SALT]:
        assert value not in text, value
    from meddata.validation.run import validate
    check = next(c for c in validate(v)["checks"] if c["name"] == "identifiers_left")
    assert check["success"], check


def test_real_dialogue_rows(store, tmp_path):
    if not SAMPLE_CSV.exists():
        pytest.skip("../shared/samples/raw is absent")
    with open(SAMPLE_CSV, encoding="gb18030", newline="") as f:
        raw = list(csv.DictReader(f))
    rs = [row(i, r["ask"], response=r["answer"]) for i, r in enumerate(raw)]
    rs[7]["question"] = "我叫赵建国，手机13912345678。" + rs[7]["question"]
    out, ledger = run_rows([make()], rs, CANONICAL, tmp_path)
    assert len(out) == len(rs)
    assert out[7]["question"] == "我叫[NAME]，手机[PHONE]。" + raw[7]["ask"]
    changed = sum(a != b for a, b in zip(out, rs))
    assert 1 <= changed <= len(rs) * 3 // 100  # few context words fire in real dialogue


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the ray extra is not installed")


@needs_ray
def test_same_version_on_ray(store):
    import ray

    from meddata.engines import LocalEngine
    from meddata.engines.ray import RayEngine

    # three read units (row groups of 8,192 rows), identifiers in each: the report's
    # examples are merged back in input order
    planted = rows()[:4]
    many = [row(i, f"头痛{i}天怎么办？", response="多喝水。") if i % 2500 else
            dict(planted[(i // 2500) % 4], id=f"t/{i}") for i in range(17_000)]
    src = store.publish("canonical", "raw", CANONICAL, [table(many)])
    assert src.rows == 17_000
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        steps = [{"deidentify": {"examples": 12}}]
        local = canonical.curate(store, "canonical/raw", steps, "local", engine=LocalEngine())
        on_ray = canonical.curate(store, "canonical/raw", steps, "ray", engine=RayEngine())
    finally:
        ray.shutdown()
    assert local.id == on_ray.id
    assert local.manifest["stages"] == on_ray.manifest["stages"]
    assert local.manifest["deidentify"] == on_ray.manifest["deidentify"]
    assert local.manifest["deidentify"]["rows_changed"] == 7
    assert len(local.manifest["deidentify"]["examples"]) == 12  # 9 from the first unit
    assert local.manifest["deidentify"]["texts_changed"] == 16


def test_a_recipe_curate_list_deidentifies_a_build(store):
    """`curate: [{deidentify: {}}]` in a recipe: the sft version holds no planted value, and
    its manifest and report.html carry the counts."""
    from meddata import recipe as recipe_mod
    from meddata.builders import pipeline

    store.publish("canonical", "raw", CANONICAL, [table([dict(r, response=r["response"] or "好的。")
                                                         for r in rows()])])
    recipe = recipe_mod.from_dict({"sources": [{"ref": "canonical/raw"}],
                                   "curate": [{"deidentify": {}}]})
    v = pipeline.build("sft", recipe, store, name="clean", progress=False)
    text = all_text(v.path)
    for value in PLANTED:
        assert value not in text, value
    assert v.manifest["deidentify"]["total"] >= len(PLANTED)
    assert "[PHONE]" in text
