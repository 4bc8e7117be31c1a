from __future__ import annotations

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from meddata.cli import cli
from meddata.evaluation import metrics as mt
from meddata.evaluation import output, presets
from meddata.evaluation import runner as ev
from meddata.evaluation import scorer as scoring
from meddata.schema import CANONICAL

pytest.importorskip("torch")

OPTS = [{"label": "A", "text": "aspirin"}, {"label": "B", "text": "heparin"},
        {"label": "C", "text": "warfarin"}]


def row(i, **over):
    base = {"id": f"b/{i}", "source": "medqa", "subset": "us", "split": "test", "lang": "en",
            "task": "mcq", "question": f"Question {i}: which drug is it?", "context": None,
            "options": OPTS, "answer_label": "A", "answer": "aspirin", "rationale": None,
            "response": None, "meta": json.dumps({"subject": "s1" if i % 2 else "s2"}),
            "raw_sha1": "0" * 40, "turns": None}
    return base | over


def publish(store, rows, name):
    return store.publish("canonical", name, CANONICAL, [pa.Table.from_pylist(rows, CANONICAL)])


def direct_loglik(scorer, context, continuation):
    """log p(continuation | context) from one unbatched, unpadded forward pass over the
    tokens lm-eval would feed (trailing spaces move to the continuation)."""
    import torch

    tok = scorer.tokenizer
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    c = tok.encode(stripped)
    t = tok.encode(stripped + continuation)[len(c):]
    with torch.no_grad():
        logits = scorer.model(input_ids=torch.tensor([c + t])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(c) - 1 + k, t[k]] for k in range(len(t))))


@pytest.fixture(scope="module")
def scorer(tiny):
    return scoring.Scorer(tiny, batch_size=4)


def test_loglik_scoring_matches_the_models_own_likelihoods(store, scorer):
    rows = [row(i) for i in range(6)]
    preset = presets.PRESETS["medqa_4options"]
    best, worst = [], []
    for r in rows:
        scores = {lab: direct_loglik(scorer, preset.text(r), f" {lab}") for lab in "ABC"}
        best.append(max(scores, key=scores.get))
        worst.append(min(scores, key=scores.get))
    right = [{**r, "answer_label": b} for r, b in zip(rows, best)]
    wrong = [{**r, "answer_label": w} for r, w in zip(rows, worst)]
    config = ev.EvalConfig()
    assert ev.evaluate(scorer, publish(store, right, "right"), config, False)["accuracy"] == 1.0
    assert ev.evaluate(scorer, publish(store, wrong, "wrong"), config, False)["accuracy"] == 0.0
    # batched scores equal the unbatched ones, multi-token continuations included
    pairs = [(preset.text(r), f" {o['text']}") for r in rows for o in r["options"]]
    got = scorer.loglik(pairs)
    for (context, cont), (ll, _greedy) in zip(pairs, got):
        assert ll == pytest.approx(direct_loglik(scorer, context, cont), abs=1e-4)
    best_text = [max(r["options"], key=lambda o: direct_loglik(
        scorer, preset.text(r), f" {o['text']}"))["label"] for r in rows]
    by_text = [{**r, "answer_label": b} for r, b in zip(rows, best_text)]
    text_mode = ev.evaluate(scorer, publish(store, by_text, "by-text"),
                            ev.EvalConfig(choices="text"), False)
    assert text_mode["items"] == 6 and text_mode["accuracy"] == 1.0


def test_trailing_space_moves_to_the_continuation(scorer):
    ctx, cont = scorer.encode_pair("Answer: ", "A")
    assert scorer.tokenizer.decode(ctx) == "Answer:"
    assert scorer.tokenizer.decode(cont) == " A"
    assert scorer.loglik([("Answer: ", "A")])[0][0] == pytest.approx(
        scorer.loglik([("Answer:", " A")])[0][0], abs=1e-6)


def test_inputs_keep_the_last_max_length_tokens(tiny):
    short = scoring.Scorer(tiny, batch_size=2, max_length=8)
    long_context = "word " * 40 + "Answer:"
    ctx, cont = short.encode_pair(long_context, " A")
    import torch

    whole = (ctx + cont)[-9:]
    with torch.no_grad():
        logits = short.model(input_ids=torch.tensor([whole[:-1]])).logits[0].float()
    expected = float(torch.log_softmax(logits[-1], -1)[cont[0]])
    assert short.loglik([(long_context, " A")])[0][0] == pytest.approx(expected, abs=1e-5)


def test_generate_method_extracts_and_counts_unparseable(store, scorer, monkeypatch):
    replies = iter(["<think>maybe B</think>The answer is A.", "答案是A", "I am not sure.",
                    "Answer: (B)"])
    monkeypatch.setattr(scorer, "generate", lambda prompts, n: [next(replies) for _ in prompts])
    result = ev.evaluate(scorer, publish(store, [row(i) for i in range(4)], "gen"),
                         ev.EvalConfig(method="generate"), False)
    assert result["correct"] == 2 and result["unparseable"] == 1
    assert result["per_subject"]["s2"]["n"] == 2


def test_multiple_answers_score_the_exact_set(store, scorer, monkeypatch):
    rows = [row(0, answer_label="AC", answer="aspirin; warfarin",
                meta=json.dumps({"question_type": "多项选择题"}), source="cmexam", lang="zh"),
            row(1, answer_label="B", source="cmexam", lang="zh")]
    labels, conts = presets.PRESETS["cmexam"].choices(rows[0])
    assert labels == ["A", "B", "C", "AB", "AC", "BC", "ABC"] and conts[4] == "AC"
    seen = []

    def fake(pairs):  # the gold set scores best for the first item, "A" for the second
        seen.extend(pairs)
        return [({"AC": 1.0, "A": 0.5}.get(c, 0.0), False) for _, c in pairs]

    monkeypatch.setattr(scorer, "loglik", fake)
    result = ev.evaluate(scorer, publish(store, rows, "multi"), ev.EvalConfig(), False)
    assert len(seen) == 7 + 3
    assert "多项选择题" in seen[0][0] and "单项选择题" in seen[7][0]
    assert result["multiple"] == {"accuracy": 1.0, "n": 1, "correct": 1,
                                  "ci95": list(mt.wilson(1, 1))}
    assert result["single"]["accuracy"] == 0.0 and result["accuracy"] == 0.5
    # generation: "A and C" is the set, "A" alone is wrong
    replies = iter(["答案：A、C", "答案：A"])
    monkeypatch.setattr(scorer, "generate", lambda prompts, n: [next(replies) for _ in prompts])
    gen = ev.evaluate(scorer, publish(store, rows, "multi"), ev.EvalConfig(method="generate"),
                      False)
    assert gen["multiple"]["correct"] == 1 and gen["single"]["correct"] == 0


def test_open_answer_metrics_equal_the_libraries():
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import BLEU

    pairs = [("the patient should reduce salt intake", "patients should reduce their salt intake",
              "en"),
             ("Aspirin is contraindicated in children.", "Aspirin is not given to children.",
              "en"),
             ("高血压患者应低盐饮食", "高血压病人应该低盐饮食", "zh"),
             ("建议尽快就医，完善检查。", "应尽快就医并完善相关检查。", "zh"),
             ("", "an empty answer scores zero", "en")]
    metrics = mt.OpenMetrics()
    tally = mt.OpenTally()
    for out, ref, lang in pairs:
        tally.add(metrics.item(out, ref, lang))
    scores = tally.scores()
    for tokenize, subset in (("13a", [p for p in pairs if p[2] == "en"]),
                             ("zh", [p for p in pairs if p[2] == "zh"])):
        one = mt.OpenTally()
        for out, ref, lang in subset:
            one.add(metrics.item(out, ref, lang))
        for n in (1, 2, 3, 4):
            direct = BLEU(tokenize=tokenize, max_ngram_order=n).corpus_score(
                [p[0] for p in subset], [[p[1] for p in subset]]).score
            assert one.scores()["bleu"][f"bleu{n}"] == pytest.approx(direct, abs=1e-9)
    rouge = RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=mt.CJKTokenizer())
    for t in ("rouge1", "rouge2", "rougeL"):
        direct = sum(100 * rouge.score(ref, out)[t].fmeasure for out, ref, _ in pairs) / 5
        assert scores["rouge"][t] == pytest.approx(direct)
    # CJK characters are tokens: 4 of 5 / 6 characters shared, in order
    zh = rouge.score("高血压病人", "高血压患者")["rougeL"]
    assert zh.fmeasure == pytest.approx(0.6)


def test_cmb_clin_scored_per_pair_and_per_case(store, scorer, monkeypatch):
    rows = [row(i, task="open_qa", source="cmb", subset="clin", lang="zh", options=None,
                answer_label=None, answer=None, context=f"病例{i // 2}：患者男，45岁。",
                question=f"问题{i}", response="诊断为高血压。",
                meta=json.dumps({"case_id": str(i // 2), "pair": i % 2 + 1}))
            for i in range(4)]
    prompts = []

    def fake(conversations, n):
        prompts.extend(c[-1]["content"] for c in conversations)
        return ["诊断为高血压。", "不知道。"] * (len(conversations) // 2)

    monkeypatch.setattr(scorer, "generate", fake)
    result = ev.evaluate(scorer, publish(store, rows, "clin"), ev.EvalConfig(), False)
    assert result["open_items"] == 4 and "accuracy" not in result
    assert "病例0" in prompts[0] and "问题0" in prompts[0]  # the case comes with the question
    assert result["per_case"]["cases"] == 2
    assert result["rouge"]["rougeL"] == pytest.approx(50.0)
    assert result["per_case"]["rouge"]["rougeL"] == pytest.approx(50.0)
    assert result["bleu"]["bleu1"] > 0


def test_split_default_is_test_and_a_missing_split_is_named(store, scorer):
    rows = [row(0, split="train"), row(1, split="test"), row(2, split="test")]
    v = publish(store, rows, "splits")
    assert ev.evaluate(scorer, v, ev.EvalConfig(), False)["items"] == 2
    assert ev.evaluate(scorer, v, ev.EvalConfig(split=None), False)["items"] == 3
    with pytest.raises(ev.EvalError, match="no 'dev' split.*test, train"):
        ev.evaluate(scorer, v, ev.EvalConfig(split="dev"), False)


def test_few_shot_examples_come_from_dev_and_never_the_item(store, scorer, monkeypatch):
    def mmlu(i, split, subject):
        return row(i, source="mmlu", subset=subject, split=split,
                   question=f"{split} question {i}", meta=json.dumps({"subject": subject}))
    rows = [mmlu(0, "dev", "anatomy"), mmlu(1, "dev", "anatomy"), mmlu(2, "dev", "virology"),
            mmlu(3, "test", "anatomy"), mmlu(4, "test", "virology")]
    seen = []
    monkeypatch.setattr(scorer, "loglik", lambda pairs: seen.extend(pairs) or
                        [(0.0, False)] * len(pairs))
    ev.evaluate(scorer, publish(store, rows, "mmlu"), ev.EvalConfig(shots=2), False)
    anatomy, virology = seen[0][0], seen[3][0]
    assert anatomy == (presets.MMLU_HEADER.format(subject="anatomy")
                       + "dev question 0\nA. aspirin\nB. heparin\nC. warfarin\nAnswer: A\n\n"
                       + "dev question 1\nA. aspirin\nB. heparin\nC. warfarin\nAnswer: A\n\n"
                       + "test question 3\nA. aspirin\nB. heparin\nC. warfarin\nAnswer:")
    assert "about virology" in virology and virology.count("Answer:") == 2
    # with no dev or train split, examples come from the evaluated split, never the item
    seen.clear()
    only_test = [row(i, question=f"q{i}") for i in range(3)]
    ev.evaluate(scorer, publish(store, only_test, "only-test"), ev.EvalConfig(shots=1), False)
    contexts = [c for c, _ in seen[::3]]
    assert contexts[0].startswith("Question: q1") and contexts[1].startswith("Question: q0")


def test_results_items_and_lm_eval_layout(tmp_path, tiny):
    runner = CliRunner()
    store = str(tmp_path / "store")
    assert runner.invoke(cli, ["--store", store, "convert", "medqa", str(EXAMPLES / "medqa"),
                               "--name", "bench", "--quiet"]).exit_code == 0
    out = runner.invoke(cli, ["--store", store, "eval", "--model", tiny, "--bench",
                              "canonical/bench", "--quiet", "--out", str(tmp_path / "eval"),
                              "--lm-eval-layout"])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    result = next(iter(report["models"][0]["results"].values()))
    items = [json.loads(line) for line in
             (tmp_path / "eval" / result["items_file"]).read_text().splitlines()]
    assert len(items) == result["items"] > 0
    first = items[0]
    assert first["prompt"].startswith("Question: ") and first["prompt"].endswith("Answer:")
    assert len(first["logliks"]) == len(first["choices"]) and first["gold"] in "ABCDE"
    assert sum(i["correct"] for i in items) == result["correct"]
    folder = tmp_path / "eval" / output.sanitize(tiny)
    (results_file,) = folder.glob("results_*.json")
    lm = json.loads(results_file.read_text())
    assert lm["results"]["medqa_4options"]["acc,none"] == pytest.approx(result["accuracy"])
    # written by lm-eval's EvaluationTracker: its config fields and task hashes
    assert lm["model_name"] == tiny and lm["model_name_sanitized"] == folder.name
    assert set(lm["task_hashes"]) == {"medqa_4options"}
    (samples_file,) = folder.glob("samples_medqa_4options_*.jsonl")
    assert samples_file.stem.split("_")[-1] == results_file.stem.split("_")[-1]
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert [s["doc_id"] for s in samples] == list(range(len(items)))
    assert samples[0]["arguments"]["gen_args_0"] == {"arg_0": first["prompt"], "arg_1": " A"}
    assert samples[0]["filtered_resps"][0][0] == first["logliks"][0]
    no_out = runner.invoke(cli, ["--store", store, "eval", "--model", tiny, "--bench",
                                 "canonical/bench", "--lm-eval-layout"])
    assert no_out.exit_code != 0 and "give --out" in no_out.output


def test_comparison_table_from_two_checkpoints(tmp_path, tiny):
    runner = CliRunner()
    store = str(tmp_path / "store")
    assert runner.invoke(cli, ["--store", store, "build", "sft", "--quiet"]).exit_code == 0
    out = runner.invoke(cli, ["--store", store, "convert", "medqa", str(EXAMPLES / "medqa"),
                              "--name", "bench", "--quiet"])
    assert out.exit_code == 0
    out = runner.invoke(cli, ["--store", store, "train", "sft", "--data", "sft/examples",
                              "--model", tiny, "--output", str(tmp_path / "sft"),
                              "--max-steps", "2", "--set", "per_device_train_batch_size=2",
                              "--set", "max_length=256", "--set", "lora_r=4"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["--store", store, "eval", "--model", tiny, "--model",
                              str(tmp_path / "sft"), "--bench", "canonical/bench", "--quiet",
                              "--split", "all", "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [m["model"] for m in report["models"]] == [tiny, str(tmp_path / "sft")]
    assert report["models"][0]["trained_on"] == []
    assert report["models"][1]["trained_on"][0].startswith("sft/examples@")
    rows = sum(1 for _ in (EXAMPLES / "medqa").rglob("*.jsonl") for _ in _.open())
    md = (tmp_path / "eval" / "results.md").read_text()
    assert md.count("\n") == 4 and "canonical/bench@" in md and f"(n={rows})" in md


def test_wilson_interval():
    lo, hi = mt.wilson(8, 10)
    assert round(lo, 4) == 0.4902 and round(hi, 4) == 0.9433
    assert mt.wilson(0, 0) == (0.0, 0.0)
    lo, hi = mt.wilson(0, 20)
    assert lo == 0.0 and 0.16 < hi < 0.17


def test_model_spec_with_an_adapter(tmp_path):
    (tmp_path / "adapter").mkdir()
    assert scoring.split_model_spec(f"Qwen/Qwen2.5-0.5B:{tmp_path / 'adapter'}") == (
        "Qwen/Qwen2.5-0.5B", str(tmp_path / "adapter"))
    assert scoring.split_model_spec("base::x") == ("base", "x")
    assert scoring.split_model_spec("runs/sft") == ("runs/sft", "")


def test_arguments_checked_before_the_model_loads(tmp_path, tiny, monkeypatch):
    """A benchmark without the split, a model that is nothing loadable: said before any
    model loads (issue 33, item 2)."""
    from meddata.evaluation import runner

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(runner, "Scorer", must_not_load)
    monkeypatch.delenv("MEDDATA_ALLOW_DOWNLOAD", raising=False)
    cli_runner = CliRunner()
    store = str(tmp_path / "store")
    assert cli_runner.invoke(cli, ["--store", store, "convert", "medqa", str(EXAMPLES / "medqa"),
                                   "--name", "bench", "--quiet"]).exit_code == 0
    out = cli_runner.invoke(cli, ["--store", store, "eval", "--model", tiny, "--bench",
                                  "canonical/bench", "--split", "nosplit"])
    assert out.exit_code == 1 and "has no 'nosplit' split" in out.output, out.output
    out = cli_runner.invoke(cli, ["--store", store, "eval", "--model", "nosuchmodel",
                                  "--bench", "canonical/bench", "--split", "all"])
    assert out.exit_code == 1 and "'nosuchmodel' is not a known alias" in out.output
