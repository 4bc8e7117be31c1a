"""lm-evaluation-harness's own task code and `meddata eval` on the same items with the
tests' tiny model: equal prompts and choices, per-choice log-likelihoods within 1e-4 nats,
equal gold answers and predictions. Skipped when lm_eval is not installed; runs on the
real sample files too when ../shared is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from meddata.cli import cli
from meddata.store import Store

pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from meddata.evaluation import lm_eval_parity as parity  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
CHOICES = ("yes", "no", "maybe")


def convert(store, source, path, name):
    out = CliRunner().invoke(cli, ["--store", str(store), "convert", source, str(path),
                                   "--name", name, "--quiet"])
    assert out.exit_code == 0, out.output
    return f"canonical/{name}"


def check(tiny, tmp_path, tasks, refs, store, shots=0):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=tiny, dtype="float32", batch_size=4, device="cpu")
    samples = parity.run_lm_eval(lm, tasks, tmp_path, shots)
    items, questions = parity.run_meddata(tiny, store, refs, shots, tmp_path)
    results = {}
    for task in tasks:
        agreement = parity.compare(task, samples[task], items[task], questions)
        s = agreement.summary()
        n = len(samples[task])
        assert n > 0 and s["items"] == n and s["unmatched"] == 0, s
        assert s["prompts_equal"] == n and s["choices_equal"] == n, s
        assert s["gold_equal"] == n and s["predictions_agree"] == n, s
        assert s["max_gap"] < 1e-4, s
        assert s["accuracy_lm_eval"] == s["accuracy_meddata"], s
        results[task] = s
    return results


def test_zero_shot_parity_on_the_fixtures(tiny, tmp_path):
    store = Store(tmp_path / "store")
    tasks = {"medqa_4options": {"test": parity.medqa_docs(
                 FIXTURES / "medqa/US/4_options/phrases_no_exclude_test.jsonl")},
             "medmcqa": {"validation": parity.medmcqa_docs(EXAMPLES / "medmcqa/dev.json")},
             # the examples' "Maybe" and " yes " decisions: meddata's converter normalizes
             # them, lm-eval's doc_to_target finds no such choice; compare the clean ones
             "pubmedqa": {"test": [d for d in parity.pubmedqa_docs(
                 EXAMPLES / "pubmedqa/ori_pqal.json") if d["final_decision"] in CHOICES]}}
    refs = {"medqa_4options": (convert(store.root, "medqa", FIXTURES / "medqa", "medqa"),
                               "test"),
            "medmcqa": (convert(store.root, "medmcqa", EXAMPLES / "medmcqa", "medmcqa"), None),
            "pubmedqa": (convert(store.root, "pubmedqa", EXAMPLES / "pubmedqa/ori_pqal.json",
                                 "pubmedqa"), None)}
    check(tiny, tmp_path, tasks, refs, store)


def test_mmlu_few_shot_parity(tiny, tmp_path):
    store = Store(tmp_path / "store")
    data = EXAMPLES / "mmlu/data"
    tasks = {"mmlu_anatomy": {"test": parity.mmlu_docs(data / "test/anatomy_test.csv"),
                              "dev": parity.mmlu_docs(data / "dev/anatomy_dev.csv")}}
    ref = convert(store.root, "mmlu", data, "mmlu")
    check(tiny, tmp_path, tasks, {"mmlu_anatomy": (ref, "test")}, store, shots=3)


def test_parity_on_the_real_samples(tiny, tmp_path, samples):
    raw = samples
    store = Store(tmp_path / "store")
    medqa = raw / "medqa/US/4_options/phrases_no_exclude_test.jsonl"
    tasks = {"medqa_4options": {"test": parity.medqa_docs(medqa)[:40]},
             "medmcqa": {"validation": parity.medmcqa_docs(raw / "medmcqa/dev.json")[:40]},
             "pubmedqa": {"test": parity.pubmedqa_docs(raw / "pubmedqa/ori_pqal.json")[:40]}}
    refs = {"medqa_4options": (convert(store.root, "medqa", medqa, "medqa"), "test"),
            "medmcqa": (convert(store.root, "medmcqa", raw / "medmcqa/dev.json", "medmcqa"),
                        None),
            "pubmedqa": (convert(store.root, "pubmedqa", raw / "pubmedqa/ori_pqal.json",
                                 "pubmedqa"), None)}
    # meddata scores every converted row; lm-eval the first 40: compare those
    items_limit = 40
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=tiny, dtype="float32", batch_size=8, device="cpu")
    samples = parity.run_lm_eval(lm, tasks, tmp_path, 0)
    from meddata.evaluation.runner import EvalConfig, evaluate
    from meddata.evaluation.scorer import Scorer

    scorer = Scorer(tiny, 8)
    for task, (ref, split) in refs.items():
        version = store.resolve(ref)
        path = tmp_path / f"{task}.jsonl"
        evaluate(scorer, version, EvalConfig(split=split, limit=items_limit), False, path)
        items = parity.read_jsonl(path)
        questions = {r["id"]: r["question"] for r in version.to_table(
            ["id", "question"]).to_pylist()}
        s = parity.compare(task, samples[task], items, questions).summary()
        assert s["items"] == len(samples[task]) == items_limit, s
        assert s["prompts_equal"] == s["items"] and s["choices_equal"] == s["items"], s
        assert s["gold_equal"] == s["items"] and s["max_gap"] < 1e-4, s


def test_ceval_valid_and_cmmlu_few_shot_parity(tiny, tmp_path):
    """The general benchmarks of the forgetting check: lm-eval's ceval-valid_<subject>
    (val, few-shot from dev) and cmmlu_<subject> (test, few-shot from dev), one general
    and one medical subject each."""
    store = Store(tmp_path / "store")
    ceval, cmmlu = EXAMPLES / "ceval", EXAMPLES / "cmmlu"
    tasks = {}
    ceval_ref = convert(store.root, "ceval", ceval, "ceval")
    cmmlu_ref = convert(store.root, "cmmlu", cmmlu, "cmmlu")
    for subject in ("computer_network", "basic_medicine"):
        tasks[f"ceval-valid_{subject}"] = {
            "val": parity.ceval_docs(ceval / f"val/{subject}_val.csv"),
            "dev": parity.ceval_docs(ceval / f"dev/{subject}_dev.csv")}
    for subject in ("high_school_physics", "anatomy"):
        tasks[f"cmmlu_{subject}"] = {"test": parity.cmmlu_docs(cmmlu / f"test/{subject}.csv"),
                                     "dev": parity.cmmlu_docs(cmmlu / f"dev/{subject}.csv")}
    # meddata evaluates each version once (every subject); compare subject by subject
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=tiny, dtype="float32", batch_size=4, device="cpu")
    samples = parity.run_lm_eval(lm, tasks, tmp_path, 3)
    items, questions = parity.run_meddata(
        tiny, store, {"ceval": (ceval_ref, "validation"), "cmmlu": (cmmlu_ref, "test")}, 3,
        tmp_path)
    for task in tasks:
        bench = "ceval" if task.startswith("ceval") else "cmmlu"
        mine = [i for i in items[bench] if i["preset"] == task]
        s = parity.compare(task, samples[task], mine, questions).summary()
        n = len(samples[task])
        assert n > 0 and s["items"] == n == len(mine) and s["unmatched"] == 0, s
        assert s["prompts_equal"] == n and s["choices_equal"] == n, s
        assert s["gold_equal"] == n and s["predictions_agree"] == n, s
        assert s["max_gap"] < 1e-4, s


def test_exported_task_folder_runs_in_lm_eval_with_meddatas_prompts(tmp_path, tiny):
    """`meddata export --format lm-eval` writes a task folder that the `lm_eval` command
    runs from --include_path, offline, requesting exactly the (context, continuation) pairs
    `meddata eval` scores, with the same predictions (issue 33, item 8)."""
    import os
    import shutil
    import subprocess

    binary = shutil.which("lm_eval") or shutil.which("lm-eval")
    if binary is None:
        pytest.skip("the lm_eval command is not installed")
    examples = EXAMPLES
    store = str(tmp_path / "store")
    runner = CliRunner()
    for source, path, name in (("medqa", examples / "medqa" / "US" / "test.jsonl", "mq"),
                               ("pubmedqa", examples / "pubmedqa", "pq")):
        out = runner.invoke(cli, ["--store", store, "convert", source, str(path), "--name",
                                  name, "--quiet"])
        assert out.exit_code == 0, out.output
    tasks = tmp_path / "tasks"
    for name in ("mq", "pq"):
        out = runner.invoke(cli, ["--store", store, "export", f"canonical/{name}", "--format",
                                  "lm-eval", "--out", str(tasks)])
        assert out.exit_code == 0, out.output
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([binary, "--model", "hf", "--model_args",
                           f"pretrained={tiny},dtype=float32", "--tasks",
                           "meddata_mq,meddata_pq", "--include_path", str(tasks), "--device",
                           "cpu", "--batch_size", "8", "--output_path", str(tmp_path / "lm"),
                           "--log_samples"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (folder,) = (tmp_path / "lm").iterdir()
    out = runner.invoke(cli, ["--store", store, "eval", "--model", tiny, "--bench",
                              "canonical/mq", "--bench", "canonical/pq", "--split", "test",
                              "--quiet", "--out", str(tmp_path / "md")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "md" / "results.json").read_text())
    for name in ("mq", "pq"):
        (samples_file,) = folder.glob(f"samples_meddata_{name}_*.jsonl")
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        result = next(r for ref, r in report["models"][0]["results"].items()
                      if ref.startswith(f"canonical/{name}@"))
        items = parity.read_jsonl(tmp_path / "md" / result["items_file"])
        by_prompt = {i["prompt"]: i for i in items}
        assert len(samples) == len(items) > 0
        for s in samples:
            item = by_prompt[s["arguments"]["gen_args_0"]["arg_0"]]
            assert [a["arg_1"] for a in s["arguments"].values()] == item["continuations"]
            lm_logliks = [float(r[0][0]) for r in s["resps"]]
            assert lm_logliks == pytest.approx(item["logliks"], abs=1e-4)
            ranked = sorted(item["logliks"], reverse=True)
            if ranked[0] - ranked[1] > 1e-4:  # a clear winner: the same prediction
                assert item["choices"][lm_logliks.index(max(lm_logliks))] == item["pred"]
                assert s["acc"] == float(item["correct"])
