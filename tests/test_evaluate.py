from __future__ import annotations

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from meddata.cli import cli
from meddata.schema import CANONICAL
from meddata.train import evaluate as ev

pytest.importorskip("torch")



def mcq_rows(n=6, lang="en"):
    opts = [{"label": "A", "text": "aspirin"}, {"label": "B", "text": "heparin"},
            {"label": "C", "text": "warfarin"}]
    return [{"id": f"b/{i}", "source": "medqa", "subset": "us", "split": "test", "lang": lang,
             "task": "mcq", "question": f"Question {i}: which drug is it?", "context": None,
             "options": opts, "answer_label": "A", "answer": "aspirin", "rationale": None,
             "response": None, "meta": json.dumps({"subject": "s1" if i % 2 else "s2"}),
             "raw_sha1": "0" * 40} for i in range(n)]


def publish(store, rows, name):
    return store.publish("canonical", name, CANONICAL, [pa.Table.from_pylist(rows, CANONICAL)])


def direct_loglik(scorer, context, continuation):
    """log p(continuation | context) from one unbatched, unpadded forward pass."""
    import torch

    tok = scorer.tokenizer
    c = tok(context, add_special_tokens=False)["input_ids"]
    t = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([c + t])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(c) - 1 + k, t[k]] for k in range(len(t))))


def test_loglik_scoring_matches_the_models_own_likelihoods(store, tiny):
    scorer = ev.Scorer(tiny, batch_size=4)
    rows = mcq_rows()
    best, worst = [], []
    for row in rows:
        scores = {lab: direct_loglik(scorer, ev.plain_prompt(row), f" {lab}")
                  for lab in ("A", "B", "C")}
        best.append(max(scores, key=scores.get))
        worst.append(min(scores, key=scores.get))
    right = [{**r, "answer_label": b} for r, b in zip(rows, best)]
    wrong = [{**r, "answer_label": w} for r, w in zip(rows, worst)]
    config = ev.EvalConfig()
    assert ev.evaluate(scorer, publish(store, right, "right"), config, False)["accuracy"] == 1.0
    assert ev.evaluate(scorer, publish(store, wrong, "wrong"), config, False)["accuracy"] == 0.0
    # multi-token continuations (option texts) go through the same check
    best_text = []
    for row in rows:
        scores = {o["label"]: direct_loglik(scorer, ev.plain_prompt(row), f" {o['text']}")
                  for o in row["options"]}
        best_text.append(max(scores, key=scores.get))
    by_text = [{**r, "answer_label": b} for r, b in zip(rows, best_text)]
    text_mode = ev.evaluate(scorer, publish(store, by_text, "by-text"),
                            ev.EvalConfig(choices="text"), False)
    assert text_mode["items"] == 6 and text_mode["accuracy"] == 1.0


def test_generate_method_extracts_and_counts_unparseable(store, tiny, monkeypatch):
    scorer = ev.Scorer(tiny)
    answers = iter(["<think>maybe B</think>The answer is A.", "答案是A", "I am not sure.",
                    "Answer: (B)"])
    monkeypatch.setattr(scorer, "generate", lambda prompts, n: [next(answers) for _ in prompts])
    rows = mcq_rows(4)
    result = ev.evaluate(scorer, publish(store, rows, "gen"),
                         ev.EvalConfig(method="generate"), False)
    assert result["correct"] == 2 and result["unparseable"] == 1
    assert result["per_subject"]["s2"]["n"] == 2


def test_wilson_interval():
    lo, hi = ev.wilson(8, 10)
    assert round(lo, 4) == 0.4902 and round(hi, 4) == 0.9433
    assert ev.wilson(0, 0) == (0.0, 0.0)
    lo, hi = ev.wilson(0, 20)
    assert lo == 0.0 and 0.16 < hi < 0.17


def test_rouge_and_bleu_character_level_for_chinese():
    assert ev.rouge_l("the cat sat", "the cat sat") == 1.0
    assert ev.rouge_l("高血压患者", "高血压病人") == pytest.approx(0.6)
    assert ev.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert 0 < ev.bleu(["高血压患者应低盐饮食"], ["高血压病人应该低盐饮食"]) < 1
    assert ev.bleu(["x"], [""]) == 0.0


def test_comparison_table_from_two_checkpoints(tmp_path, tiny):
    runner = CliRunner()
    store = str(tmp_path / "store")
    for kind in ("sft",):
        assert runner.invoke(cli, ["--store", store, "build", kind, "--quiet"]).exit_code == 0
    out = runner.invoke(cli, ["--store", store, "convert", "medqa",
                              str(__import__("conftest").EXAMPLES / "medqa"), "--name",
                              "bench", "--quiet"])
    assert out.exit_code == 0
    out = runner.invoke(cli, ["--store", store, "train", "sft", "--data", "sft/examples",
                              "--model", tiny, "--output", str(tmp_path / "sft"),
                              "--max-steps", "2", "--set", "per_device_train_batch_size=2",
                              "--set", "max_length=256", "--set", "lora_r=4"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["--store", store, "eval", "--model", tiny, "--model",
                              str(tmp_path / "sft"), "--bench", "canonical/bench", "--quiet",
                              "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [m["model"] for m in report["models"]] == [tiny, str(tmp_path / "sft")]
    assert report["models"][0]["trained_on"] == []
    assert report["models"][1]["trained_on"][0].startswith("sft/examples@")
    md = (tmp_path / "eval" / "results.md").read_text()
    assert md.count("\n") == 4 and "canonical/bench@" in md and "(n=14)" in md  # 2 rows


def test_model_spec_with_an_adapter(tmp_path):
    (tmp_path / "adapter").mkdir()
    assert ev.split_model_spec(f"Qwen/Qwen2.5-0.5B:{tmp_path / 'adapter'}") == (
        "Qwen/Qwen2.5-0.5B", str(tmp_path / "adapter"))
    assert ev.split_model_spec("base::x") == ("base", "x")
    assert ev.split_model_spec("runs/sft") == ("runs/sft", "")
