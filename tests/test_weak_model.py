from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from meddata import recipe as recipe_mod
from meddata.builders import pipeline, weak_model
from meddata.builders.weak_model import Generation
from meddata.cli import cli

pytest.importorskip("torch")



def recipe(model: str, **rejected):
    return recipe_mod.from_dict({
        "name": "weak", "sources": [{"source": "medmcqa", "paths": [str(EXAMPLES / "medmcqa")]},
                                    {"source": "shennong", "paths": [str(EXAMPLES / "shennong")]}],
        "rejected": {"strategy": "weak_model", "model": model, "max_new_tokens": 6,
                     "temperature": 1.0, "top_p": 1.0, "batch_size": 4,
                     "drop_unfinished": False,
                     **rejected}})


def test_generates_rejected_responses_end_to_end(store, tiny):
    v = pipeline.build("preference", recipe(tiny), store, progress=False)
    rows = v.to_table().to_pylist()
    assert len(rows) == 9 + 4  # MedMCQA rows with an answer, and every ShenNong row
    assert {r["rejected_by"] for r in rows} == {f"weak_model:{tiny}"}
    assert all(r["rejected"][0]["role"] == "assistant" and r["rejected"][0]["content"]
               for r in rows)
    rep = v.manifest["rejected"]["weak_model"]
    assert rep["generated"] == 13 and rep["from_cache"] == 0 and rep["new_tokens"] > 0
    again = pipeline.build("preference", recipe(tiny), store, progress=False)
    assert again.id == v.id  # the cache gives the same rows, so the same version
    assert again.this_run["rejected"]["weak_model"]["from_cache"] == 13


def test_a_killed_build_resumes_with_only_the_missing_rows(store, tiny, monkeypatch):
    real = weak_model.TransformersBackend
    calls = []

    class Dies(real):
        def generate(self, prompts):
            calls.append(len(prompts))
            if len(calls) == 2:
                raise KeyboardInterrupt("killed")
            return super().generate(prompts)

    monkeypatch.setitem(weak_model.BACKENDS, "transformers", Dies)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build("preference", recipe(tiny), store, progress=False)
    assert store.versions(kind="preference") == []
    assert calls == [4, 4]  # the first batch was generated and cached, the second killed

    class Counts(real):
        def generate(self, prompts):
            calls.append(len(prompts))
            return super().generate(prompts)

    calls.clear()
    monkeypatch.setitem(weak_model.BACKENDS, "transformers", Counts)
    v = pipeline.build("preference", recipe(tiny), store, progress=False)
    assert sum(calls) == 13 - 4  # only what the first run did not finish
    assert v.this_run["rejected"]["weak_model"]["from_cache"] == 4


class Scripted:
    """A backend that answers each prompt from a function of the prompt."""

    def __init__(self, answer):
        self.answer, self.calls = answer, 0

    def render(self, messages):
        return messages[-1]["content"]

    def generate(self, prompts):
        self.calls += len(prompts)
        return [self.answer(p) for p in prompts]


def test_filters_drop_with_reasons(store, monkeypatch):
    def answer(prompt):
        if "scurvy" in prompt:
            return Generation("", True, 0)
        if "absence seizures" in prompt:
            return Generation("Ethosuximide, because it blocks T-type", False, 6)
        if "Koplik" in prompt:  # the chosen answer, word for word
            return Generation("The answer is D. Measles.", True, 6)
        return Generation("A confident but unrelated answer about vitamins.", True, 9)

    monkeypatch.setitem(weak_model.BACKENDS, "transformers", lambda spec: Scripted(answer))
    r = recipe("scripted", drop_unfinished=True)
    r.reasoning = "none"
    v = pipeline.build("preference", r, store, progress=False)
    stage = next(s for s in v.manifest["stages"] if s["stage"] == "preference")
    assert stage["dropped"]["empty_generation"] == 1
    assert stage["dropped"]["unfinished_generation"] == 1
    assert stage["dropped"]["rejected_near_chosen"] == 1


def test_cli_rejected_model_and_clear_errors(tmp_path, tiny):
    runner = CliRunner()
    s = ["--store", str(tmp_path / "s")]
    out = runner.invoke(cli, s + ["build", "preference", "--rejected-model", tiny, "--quiet"])
    assert out.exit_code == 0, out.output
    assert "weak_model:" in out.output and "generated" in out.output
    out = runner.invoke(cli, s + ["build", "preference", "--rejected", "weak_model"])
    assert out.exit_code == 1 and "weak_model needs `model`" in out.output
    out = runner.invoke(cli, s + ["build", "preference", "--rejected-model", tiny,
                                  "--rejected-backend", "vllm", "--quiet"])
    assert out.exit_code == 1
    assert "vllm" in out.output.lower()
