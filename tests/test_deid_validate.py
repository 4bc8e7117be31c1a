"""`meddata validate` fails a canonical version in which the de-identification detector
still finds identifiers above the configured count (`--max-identifiers`; de-identified
versions are always checked, with 0)."""

from __future__ import annotations

import json

import pyarrow as pa
from click.testing import CliRunner

from meddata.cli import cli
from meddata.schema import CANONICAL
from meddata.validation.run import Bounds, validate


def rows(texts):
    return [{"id": f"r{i}", "source": "medqa", "subset": "us", "split": "train", "lang": "zh",
             "task": "open_qa", "question": t, "context": None, "options": [],
             "answer_label": None, "answer": None, "rationale": None, "response": "多喝水。",
             "meta": "{}", "raw_sha1": "0" * 40} for i, t in enumerate(texts)]


CLEAN = ["头痛三天，体温38.5℃，怎么办？", "血压150/95mmHg，需要吃药吗？", "85岁老人便秘怎么办？"]
DIRTY = ["我叫张伟，头痛三天，手机13812345678。", "血压150/95mmHg，需要吃药吗？",
         "住院号：ZY2023123456，能查报告吗？"]


def publish(store, name, texts, stage=None):
    with store.publisher("canonical", name, CANONICAL) as pub:
        pub.write(pa.Table.from_pylist(rows(texts), CANONICAL))
        if stage:
            pub.add_stage("deidentify", len(texts), len(texts), settings=stage)
    return pub.version


def check(result):
    return next((c for c in result["checks"] if c["name"] == "identifiers_left"), None)


def test_only_deidentified_versions_are_checked_by_default(store):
    assert check(validate(publish(store, "plain", DIRTY))) is None
    ok = check(validate(publish(store, "clean", CLEAN, stage={"mode": "placeholder"})))
    assert ok["success"] and ok["failing_rows"] == 0
    bad = check(validate(publish(store, "leaky", DIRTY, stage={"mode": "placeholder"})))
    assert not bad["success"]
    assert bad["failing_rows"] == 2 and bad["examples"] == ["r0", "r2"]
    assert bad["observed"] == {"name": 1, "phone": 1, "record_number": 1}


def test_the_count_is_a_setting(store):
    v = publish(store, "plain", DIRTY)
    assert not check(validate(v, bounds=Bounds(max_identifiers=2)))["success"]
    assert check(validate(v, bounds=Bounds(max_identifiers=3)))["success"]


def test_the_stage_settings_choose_what_is_looked_for(store):
    v = publish(store, "emails", DIRTY, stage={"entities": ["email"], "max_age": 89})
    assert check(validate(v))["success"]


def test_cli_fails_and_reports_no_value(store, tmp_path):
    publish(store, "plain", DIRTY)
    runner = CliRunner()
    s = ["--store", str(store.root)]
    assert runner.invoke(cli, s + ["validate", "canonical/plain"]).exit_code == 0
    out = runner.invoke(cli, s + ["validate", "canonical/plain", "--max-identifiers", "0",
                                  "--json", str(tmp_path / "r.json")])
    assert out.exit_code == 1 and "identifiers_left" in out.output
    text = out.output + (tmp_path / "r.json").read_text()
    for value in ("张伟", "13812345678", "ZY2023123456"):
        assert value not in text
    assert json.loads((tmp_path / "r.json").read_text())[0]["success"] is False
