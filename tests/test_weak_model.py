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


def test_the_weak_model_loads_in_each_worker_and_is_never_shipped(store, tiny, monkeypatch,
                                                                    tmp_path):
    """setup() loads the model in each copy of the step (each worker), the pickled step
    carries no model, the copies share the generation cache, and the driver's report
    counts each copy's work once: a second run, in one go, finds every answer cached."""
    import pickle

    import pyarrow as pa

    from conftest import canonical_rows, through_workers
    from meddata.builders.preference import Pair
    from meddata.engines.local import run_rows
    from meddata.schema import CANONICAL

    real, loaded = weak_model.TransformersBackend, []

    class Counted(real):
        def __init__(self, spec):
            loaded.append(spec.model)
            super().__init__(spec)

    monkeypatch.setitem(weak_model.BACKENDS, "transformers", Counted)
    rows = [r for r in canonical_rows(40) if r["task"] == "mcq"]  # 8 rows, all answered
    r = recipe(tiny)
    step = Pair(r, store)
    step.ready()
    assert len(loaded) == 1 and step.strategies["weak_model"].backend is not None
    blob = pickle.dumps(step)
    assert b"torch" not in blob and "strategies" not in vars(pickle.loads(blob))

    table = pa.Table.from_pylist(rows, schema=CANONICAL)
    driver = Pair(r, store)
    got, books = through_workers(driver, [table.slice(0, 3), table.slice(3)], tmp_path)
    assert len(loaded) == 3  # one model per worker copy; none on the driver
    assert "strategies" not in vars(pickle.loads(pickle.dumps(driver)))
    rep = driver.report()["weak_model"]
    assert rep["generated"] == len(rows) == len(got) and rep["from_cache"] == 0
    assert rep["new_tokens"] > 0 and rep["cache"].startswith(str(store.root))

    again = Pair(r, store)
    expected, _ = run_rows([again], rows, CANONICAL, tmp_path)
    assert expected == got  # the workers' answers, read back from the shared cache
    assert again.report()["weak_model"]["generated"] == 0
    assert again.report()["weak_model"]["from_cache"] == len(rows)


def test_an_injected_backend_is_used_in_process(store, tmp_path):
    from conftest import canonical_rows
    from meddata.builders.preference import Pair
    from meddata.engines.local import run_rows
    from meddata.schema import CANONICAL

    rows = [r for r in canonical_rows(20) if r["task"] == "mcq"]
    step = Pair(recipe("scripted"), store)
    backend = Scripted(lambda p: Generation("A scripted wrong answer.", True, 5))
    step._strategy("weak_model", setup=False).backend = backend
    out, _ = run_rows([step], rows, CANONICAL, tmp_path)
    assert [x["rejected"][0]["content"] for x in out] == ["A scripted wrong answer."] * 4
    assert backend.calls == 4 and step.strategies["weak_model"].backend is backend


def test_workers_share_the_generation_cache(tmp_path):
    """Processes writing the same keys at once: no lock errors, the first text stored
    stays, and every process gets the text the cache kept."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        seen = pool.map(_write_cache, [(str(tmp_path), w) for w in range(3)])
    kept = weak_model.GenerationCache(tmp_path, "m", None, {}).get(
        [f"k{i}" for i in range(60)])
    assert len(kept) == 60
    for texts in seen:
        assert {k: kept[k].text for k in texts} == texts


def _write_cache(args):
    from pathlib import Path

    folder, worker = args
    cache = weak_model.GenerationCache(Path(folder), "m", None, {})
    seen = {}
    for b in range(60):
        keys = [f"k{(b * 7 + i) % 60}" for i in range(5)]
        stored = cache.add({k: Generation(f"{k} from {worker}", True, 1) for k in keys})
        seen.update({k: stored[k].text for k in keys})
    return seen
