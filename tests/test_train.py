from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from meddata.cli import cli
from meddata.evaluation import answers
from meddata.train import rewards
from meddata.train.judge import Judge, JudgeUnavailable

pytest.importorskip("trl")

FAST = ["--max-steps", "2", "--set", "per_device_train_batch_size=2", "--set",
        "logging_steps=1", "--set", "save_steps=2", "--set", "lora_r=4"]
FAST_OWN = {"grpo": ["--set", "num_generations=2", "--set", "max_completion_length=8"],
            "rlhf": ["--set", "num_generations=2", "--set", "max_completion_length=8"]}


def fast(stage: str) -> list[str]:
    return FAST + FAST_OWN.get(stage, ["--set", "max_length=256"])


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny):
    """A store with every kind built from the examples, and a tiny Qwen2 model."""
    root = tmp_path_factory.mktemp("train")
    store = root / "store"
    runner = CliRunner()
    for kind in ("sft", "preference", "kto", "pretrain", "prompts"):
        out = runner.invoke(cli, ["--store", str(store), "build", kind, "--quiet"])
        assert out.exit_code == 0, out.output
    return {"root": root, "model": tiny, "store": str(store)}


def train(env, stage, data, model, name, *extra):
    out = CliRunner().invoke(cli, ["--store", env["store"], "train", stage, "--data", data,
                                   "--model", model, "--output", str(env["root"] / name),
                                   *fast(stage), *extra])
    assert out.exit_code == 0, out.output
    return json.loads((env["root"] / name / "training_manifest.json").read_text())


def check_manifest(manifest, env, stage, kind):
    from meddata.store import Store

    version = Store(env["store"]).resolve(f"{kind}/examples")
    assert manifest["stage"] == stage and manifest["global_step"] == 2
    data = manifest["data"][0]
    assert data["id"] == version.id and data["content_sha256"] == version.manifest[
        "content_sha256"]
    assert [s["sha256"] for s in data["shards"]] == [s["sha256"] for s in
                                                      version.manifest["shards"]]
    assert manifest["settings"]["lora_r"] == 4 and manifest["trl_args"]["max_steps"] == 2
    assert manifest["settings_origin"]["lora_r"] == "command line"
    assert manifest["settings_origin"]["seed"] == "default"
    assert manifest["trl_args_set_by"]["max_steps"] == "meddata"
    assert {"torch", "transformers", "trl", "peft"} <= set(manifest["libraries"])
    assert manifest["metrics"]["train_loss"] == manifest["metrics"]["train_loss"]  # not NaN
    adapter = manifest["outputs"]["adapter"]
    card = open(f"{adapter}/README.md").read()
    assert version.ref in card


@pytest.mark.parametrize("stage,kind", [("sft", "sft"), ("cpt", "pretrain"), ("dpo", "preference"),
                                        ("kto", "kto"), ("reward", "preference"),
                                        ("grpo", "prompts")])
def test_each_stage_two_steps(env, stage, kind):
    manifest = train(env, stage, f"{kind}/examples", env["model"], f"run-{stage}")
    check_manifest(manifest, env, stage, kind)


def test_chained_sft_then_dpo_then_merge(env):
    sft = train(env, "sft", "sft/examples", env["model"], "chain-sft")
    dpo = train(env, "dpo", "preference/examples", str(env["root"] / "chain-sft"), "chain-dpo",
                "--merge")
    assert dpo["parent_stage"]["stage"] == "sft"
    assert dpo["parent_stage"]["data"] == [sft["data"][0]["ref"]]
    # the whole chain of data versions, as eval's "trained on" shows it (issue 33, item 5)
    assert [(s["stage"], s["data"]) for s in dpo["lineage"]] == [
        ("sft", [sft["data"][0]["ref"]]), ("dpo", [dpo["data"][0]["ref"]])]
    from meddata.evaluation.output import trained_on
    from meddata.evaluation.scorer import trained_lineage

    chain = trained_lineage(str(env["root"] / "chain-dpo"))
    assert trained_on({"lineage": chain}) == (f"sft {sft['data'][0]['ref']} → "
                                              f"dpo {dpo['data'][0]['ref']}")
    assert dpo["base_model"]["name"] == env["model"]
    merged = env["root"] / "chain-dpo" / "merged"
    assert (merged / "config.json").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(merged)  # a full checkpoint that loads by itself


def test_rlhf_with_the_reward_stage_model(env):
    train(env, "reward", "preference/examples", env["model"], "rm")
    manifest = train(env, "rlhf", "prompts/examples", env["model"], "rlhf",
                     "--set", f"reward_model={env['root'] / 'rm'}")
    assert manifest["algorithm"] == "rloo" and manifest["trl_args"]["beta"] == 0.05
    assert manifest["reward_model"]["parent"]["stage"] == "reward"


def test_gspo_settings(env):
    manifest = train(env, "grpo", "prompts/examples", env["model"], "gspo",
                     "--set", "algorithm=gspo")
    args = manifest["trl_args"]
    assert args["importance_sampling_level"] == "sequence" and args["loss_type"] == "grpo"
    assert args["beta"] == 0.0 and args["epsilon"] == 3e-4 and args["epsilon_high"] == 4e-4
    assert args["steps_per_generation"] == 4


def test_clear_errors(env):
    runner = CliRunner()
    base = ["--store", env["store"], "train"]
    out = runner.invoke(cli, base + ["dpo", "--data", "sft/examples", "--model", env["model"]])
    assert out.exit_code == 1 and "dpo trains on preference versions" in out.output
    out = runner.invoke(cli, base + ["sft", "--data", "sft/examples", "--model", env["model"],
                                     "--set", "quantization=4bit"])
    import torch

    if not torch.cuda.is_available():
        assert out.exit_code == 1 and "needs a CUDA GPU" in out.output
    out = runner.invoke(cli, base + ["sft", "--data", "sft/examples", "--model", env["model"],
                                     "--set", "lora_rank=4"])
    assert out.exit_code == 1 and "unknown setting 'lora_rank' for stage sft" in out.output
    out = runner.invoke(cli, base + ["sft", "--data", "sft/examples", "--model", env["model"],
                                     "--set", "desirable_weight=2"])  # a kto key
    assert out.exit_code == 1 and "it is a setting of kto" in out.output
    out = runner.invoke(cli, base + ["sft", "--data", "sft/examples", "--model", env["model"],
                                     "--set", "trl.wieght_decay=0.1"])
    assert out.exit_code == 1 and "trl.wieght_decay is not a field of SFTConfig" in out.output
    assert "weight_decay" in out.output
    out = runner.invoke(cli, base + ["sft", "--data", "sft/examples", "--model", env["model"],
                                     "--set", "trl.learning_rate=0.1"])
    assert out.exit_code == 1 and "learning_rate is a meddata setting" in out.output
    out = runner.invoke(cli, base + ["rlhf", "--data", "prompts/examples", "--model",
                                     env["model"]])
    assert out.exit_code == 1 and "reward_model" in out.output


def test_every_trl_field_is_reachable_and_recorded(env):
    manifest = train(env, "sft", "sft/examples", env["model"], "trl-fields",
                     "--set", "trl.weight_decay=0.01", "--set", "trl.max_grad_norm=0.5",
                     "--set", "trl.optim=adamw_torch")
    args = manifest["trl_args"]
    assert args["weight_decay"] == 0.01 and args["max_grad_norm"] == 0.5
    assert args["optim"] == "adamw_torch"
    assert manifest["trl"] == {"weight_decay": 0.01, "max_grad_norm": 0.5,
                               "optim": "adamw_torch"}
    assert manifest["trl_args_set_by"]["weight_decay"] == "user"
    assert manifest["trl_args_set_by"]["bf16"] == "meddata"


@pytest.mark.parametrize("config,stage,kind", [
    ("cpt", "cpt", "pretrain"), ("sft", "sft", "sft"), ("reward", "reward", "preference"),
    ("dpo", "dpo", "preference"), ("kto", "kto", "kto"), ("grpo", "grpo", "prompts"),
    ("gspo", "grpo", "prompts")])
def test_bundled_configs_run_two_steps(env, config, stage, kind):
    manifest = train(env, stage, f"{kind}/examples", env["model"], f"config-{config}",
                     "--config", config)
    assert manifest["global_step"] == 2
    import yaml

    from meddata.train.settings import config_path

    written = yaml.safe_load(config_path(config).read_text())
    for key, value in written.items():
        if key == "trl":
            assert all(manifest["trl_args"][k] == v for k, v in value.items())
        elif key not in ("max_length", "num_generations", "max_completion_length",
                         "per_device_train_batch_size", "lora_r"):  # (FAST overrides these)
            assert manifest["settings"][key] == value, key
            assert manifest["settings_origin"][key] == "config"


def test_rlhf_config_runs_two_steps(env):
    train(env, "reward", "preference/examples", env["model"], "rm-config")
    manifest = train(env, "rlhf", "prompts/examples", env["model"], "rlhf-config",
                     "--config", "rlhf", "--set", f"reward_model={env['root'] / 'rm-config'}")
    assert manifest["trl_args"]["top_p"] == 0.9 and manifest["settings"]["learning_rate"] == 1e-5


def test_length_check_before_training(env):
    manifest = train(env, "sft", "sft/examples", env["model"], "short",
                     "--set", "max_length=32")  # (the last --set wins over fast()'s 256)
    lengths = manifest["lengths"]
    assert lengths["max_length"] == 32 and lengths["over_max_length"] > 0
    from meddata.store import Store

    train_rows = sum(s["rows"] for s in Store(env["store"]).resolve("sft/examples")
                     .manifest["shards"] if s["split"] == "train")
    assert lengths["rows"] == train_rows and lengths["longest"] > 32


# ---- rewards ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,letter", [
    ("The answer is C.", "C"), ("Answer: (b)", "B"), ("I think the correct option is D", "D"),
    ("<think>A seems wrong, B maybe</think>\nThe answer is B. Vitamin B1.", "B"),
    ("<think>the answer is A</think> So the answer is C", "C"),
    ("答案是C。", "C"), ("答案：D", "D"), ("故本题选B", "B"), ("C", "C"),
    ("I cannot tell.", None), ("The answer is Z", None),
])
def test_answer_extraction(text, letter):
    assert answers.extract_letter(text, "ABCDE") == letter


@pytest.mark.parametrize("text,letters", [
    ("The answer is A, C and D.", "ACD"), ("答案是ACD", "ACD"), ("答案：A、C、D", "ACD"),
    ("The answers are B and E", "BE"), ("The answer is C. Vitamin C.", "C"),
])
def test_several_letters(text, letters):
    assert answers.extract_letters(text, "ABCDE") == letters


def test_rewards_on_prompts_columns():
    completions = [[{"role": "assistant", "content": "<think>x</think>The answer is A."}],
                   [{"role": "assistant", "content": "The answer is B."}],
                   [{"role": "assistant", "content": "答案是yes"}],
                   [{"role": "assistant", "content": "<think>a</think><think>b</think>A"}]]
    opts = [{"label": "A", "text": "x"}, {"label": "B", "text": "y"}]
    scores = rewards.mcq_exact(None, completions, answer_label=["A", "A", "yes", None],
                               task=["mcq", "mcq", "yes_no", "open_qa"],
                               options=[opts, opts, [], []])
    assert scores == [1.0, 0.0, 1.0, None]
    # several correct options: the exact set scores, a subset or superset does not
    many = [[{"role": "assistant", "content": f"The answer is {x}"}] for x in
            ("A, C", "A", "A, B, C", "C and A")]
    opts3 = [{"label": c, "text": c} for c in "ABC"]
    assert rewards.mcq_exact(None, many, answer_label=["AC"] * 4, task=["mcq"] * 4,
                             options=[opts3] * 4) == [1.0, 0.0, 0.0, 1.0]
    assert rewards.think_format(None, completions) == [1.0, 0.0, 0.0, 0.0]


# ---- the judge ------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    mode = "ok"
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        _Handler.seen.append(prompt)
        if _Handler.mode == "down":
            self.send_response(503)
            self.end_headers()
            return
        grade = "A" if "vitamin C" in prompt.split("Answer to grade:")[1] else "D"
        payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                       "content": grade}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.mode, _Handler.seen = "ok", []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _judge_call(judge, answers):
    prompts = [[{"role": "user", "content": "Which vitamin prevents scurvy?"}]] * len(answers)
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    return asyncio.run(judge.reward(prompts, completions, answer=["vitamin C"] * len(answers)))


def test_judge_scores_only_text_after_think_and_caches(server, tmp_path):
    judge = Judge(url=server, retries=0, cache_file=str(tmp_path / "judge.jsonl"))
    scores = _judge_call(judge, ["<think>maybe vitamin D</think>It is vitamin C.",
                                 "<think>vitamin C?</think>It is vitamin D."])
    assert scores == [2.0, -0.5]
    assert all("<think>" not in p.split("Answer to grade:")[1] for p in _Handler.seen)
    calls = judge.calls
    again = Judge(url=server, retries=0, cache_file=str(tmp_path / "judge.jsonl"))
    assert _judge_call(again, ["<think>maybe vitamin D</think>It is vitamin C."]) == [2.0]
    assert again.calls == 0 and calls == 2
    custom = Judge(url=server, scores={"same": 1.0})
    assert _judge_call(custom, ["It is vitamin C."]) == [1.0]


def test_judge_failure_policy(server):
    _Handler.mode = "down"
    with pytest.raises(JudgeUnavailable, match="failed after 3 attempts"):
        _judge_call(Judge(url=server, retries=2, backoff=0.01), ["vitamin C"])
    assert len(_Handler.seen) == 3
    assert _judge_call(Judge(url=server, retries=0, on_failure="skip"), ["x"]) == [None]
    assert _judge_call(Judge(url=server, retries=0, on_failure="zero"), ["x"]) == [0.0]
    dead = Judge(url="http://127.0.0.1:9/v1", retries=0, timeout=2, on_failure="zero")
    assert _judge_call(dead, ["x"]) == [0.0]


def test_grpo_trains_with_the_judge_reward(env, server):
    manifest = train(env, "grpo", "prompts/examples", env["model"], "grpo-judge",
                     "--set", "rewards=[judge, think_format]",
                     "--set", f'judge={{url: "{server}", retries: 0, on_failure: zero}}')
    assert manifest["rewards"] == ["judge", "think_format"]
    assert _Handler.seen  # the judge was asked during training


# ---- settings without training ---------------------------------------------------------------------
def test_stage_help_lists_exactly_its_settings():
    import dataclasses

    from meddata.train import settings_classes

    runner = CliRunner()
    for stage, cls in settings_classes().items():
        out = runner.invoke(cli, ["train", stage, "--help"])
        assert out.exit_code == 0
        block = out.output.split("Settings of")[1].split("\n\n")[0]
        listed = [line.split()[0] for line in block.splitlines()[1:]]
        assert listed == [f.name for f in dataclasses.fields(cls)], stage
    sft = runner.invoke(cli, ["train", "sft", "--help"]).output
    assert "beta" not in sft and "desirable_weight" not in sft and "packing" in sft


def test_docs_settings_tables_are_the_classes():
    from conftest import ROOT
    from meddata.train import settings_classes
    from meddata.train.settings import markdown

    assert markdown(settings_classes()) in (ROOT / "docs" / "train.md").read_text()


def test_manifests_written_before_the_settings_change_still_load(tmp_path, tiny):
    """eval and chained stages read old manifests (a flat `config`, no `settings`)."""
    from meddata.train.common import locate
    from meddata.train.settings import Common

    old = tmp_path / "old-run"
    (old / "adapter").mkdir(parents=True)
    (old / "training_manifest.json").write_text(json.dumps({
        "stage": "sft", "data": [{"ref": "sft/examples@0123456789abcdef"}],
        "base_model": {"name": tiny, "path": tiny, "revision": None, "gguf_file": None},
        "config": {"lora_r": 16, "learning_rate": 2e-4}, "trl_args": {}, "metrics": {},
        "global_step": 10, "outputs": {"adapter": str(old / "adapter"), "merged": None}}))
    base = locate(str(old), Common())
    assert base.name == tiny and base.adapter == str(old / "adapter")
    assert base.parent["stage"] == "sft" and base.parent["data"] == [
        "sft/examples@0123456789abcdef"]


def test_cpt_trains_on_a_packed_version_without_text(env):
    """A version packed at build time carries input_ids and no text: TRL's SFTTrainer takes
    it as already tokenized (it never asks for text)."""
    out = CliRunner().invoke(cli, ["--store", env["store"], "build", "pretrain", "--quiet",
                                   "--tokenizer", env["model"], "--max-tokens", "64", "--pack",
                                   "--name", "packed", "--no-report"])
    assert out.exit_code == 0, out.output
    from meddata.store import Store

    assert "text" not in Store(env["store"]).resolve("pretrain/packed").schema.names
    manifest = train(env, "cpt", "pretrain/packed", env["model"], "cpt-packed")
    assert manifest["global_step"] == 2
    assert manifest["metrics"]["train_loss"] == manifest["metrics"]["train_loss"]  # not NaN


def test_cheap_checks_before_anything_loads(env, monkeypatch):
    """An unknown model, a missing data version: one line each, in seconds, no network and
    nothing loaded (issue 33, item 2)."""
    import time

    from meddata.train import common

    def must_not_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(common, "load_model", must_not_load)
    monkeypatch.setattr(common, "load_tokenizer", must_not_load)
    monkeypatch.delenv("MEDDATA_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub that cannot answer
    runner = CliRunner()
    base = ["--store", env["store"], "train", "sft"]
    t0 = time.perf_counter()
    out = runner.invoke(cli, base + ["--data", "sft/examples", "--model", "nosuchmodel"])
    assert time.perf_counter() - t0 < 5
    assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1, out.output
    assert "'nosuchmodel' is not a known alias (smollm2-135m-instruct)" in out.output
    assert "--allow-download" in out.output
    out = runner.invoke(cli, base + ["--data", "sft/examples", "--model", "./no/such/dir"])
    assert out.exit_code == 1 and "no such path" in out.output
    t0 = time.perf_counter()
    out = runner.invoke(cli, base + ["--data", "sft/nope", "--model", env["model"]])
    assert time.perf_counter() - t0 < 5
    assert out.exit_code == 1 and "sft/nope" in out.output, out.output


def test_validation_split_is_evaluated_once(env, monkeypatch):
    """The trainer evaluates at the last step; the summary reuses that figure (issue 33,
    item 1)."""
    import transformers

    calls = []
    evaluate = transformers.Trainer.evaluate

    def counting(self, *args, **kwargs):
        calls.append(self.state.global_step)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "evaluate", counting)
    manifest = train(env, "sft", "sft/examples", env["model"], "eval-once", "--set",
                     "eval_steps=1")
    assert calls == [1, 2] and "eval_loss" in manifest["metrics"]
    calls.clear()
    manifest = train(env, "sft", "sft/examples", env["model"], "eval-once-end")
    assert calls == [2] and "eval_loss" in manifest["metrics"]


def test_training_log_piped_has_no_redrawn_bars(env):
    """Training with stderr piped to a log: no carriage returns or cursor-up escapes, no
    warning a user cannot act on (issue 33, item 4)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "meddata.cli", "--store", env["store"],
                           "train", "sft", "--data", "sft/examples", "--model", env["model"],
                           "--output", str(env["root"] / "piped"), *fast("sft")],
                          capture_output=True, text=True, timeout=900,
                          env={k: v for k, v in os.environ.items()
                               if not k.startswith("TQDM_")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in (proc.stdout, proc.stderr):
        assert "\r" not in text and "\x1b[" not in text
    assert "gemm_4bit_forward" not in proc.stderr
    assert "will assume that the vocabulary was not modified" not in proc.stderr
    assert "sft: 2 steps on sft/examples@" in proc.stdout
