"""Curation (normalize + chinese + language + quality) on mixed medical documents with planted
junk: meddata against Data-Juicer and datatrove, back to back, each in a fresh process.

    flock /tmp/meddata-bench.lock python benchmarks/curate_bench.py [--docs 100000]
        [--scale 5] [--skip meddata-nolang,dj,datatrove] [--keep-data DIR]

The competitors are not meddata dependencies; install them to compare:
    pip install py-data-juicer datatrove spacy

The corpus (seeded): English and Chinese medical QA documents (a question and an answer:
clinical vignettes with doses, lab tables, short answers, Chinese with English drug names),
and planted cases of each kind, in shuffled order:
- edits (the row must stay, repaired): mojibake (UTF-8 read as Windows-1252) in English and
  Chinese, HTML markup and entities, Traditional Chinese;
- junk (the row must go): French, German and Japanese text, too short, repeated lines,
  repeated n-grams, symbol soup, digit runs, navigation menus, web boilerplate, lorem ipsum.

What runs (the timing is each contender's own run, reading the corpus file and writing
what it keeps; peak RSS is its whole process tree):
- meddata: `meddata curate` (meddata.canonical.curate, local engine) with
  [normalize, chinese: {to: simplified}, language: {keep: [en, zh]}, quality] at their
  defaults, from a canonical version to a published one (rejects, report and all).
- Data-Juicer (its DefaultExecutor, np=1, from a config as `dj-process` reads): the same
  operations where it has them, at its defaults: fix_unicode_mapper, clean_html_mapper,
  chinese_convert_mapper (t2s), whitespace_normalization_mapper, text_length_filter,
  special_characters_filter, character_repetition_filter, word_repetition_filter,
  alphanumeric_filter. Its language_id_score_filter needs a fastText model download, so
  it cannot run offline and is left out.
- datatrove (its LocalPipelineExecutor, one task): FTFYFormatter, GopherRepetitionFilter,
  GopherQualityFilter, C4QualityFilter (with filter_no_terminal_punct off, as FineWeb ran
  it), FineWebQualityFilter, at their defaults (English word tokenizer, from spacy, no
  model download). Its LanguageFilter needs a fastText model download: left out; it has
  no HTML or Chinese conversion step.

Decisions are scored against the plan: junk kept (planted junk a contender did not drop)
and good dropped (good or edit-only documents it dropped), overall and by kind. Memory:
meddata runs again on `--scale` times the documents, to show its peak RSS stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import run_tree  # noqa: E402

GOOD_KINDS = ("vignette_en", "short_en", "labs_en", "dose_en", "vignette_zh", "short_zh",
              "labs_zh", "mixed_zh")
EDIT_KINDS = ("mojibake_en", "mojibake_zh", "html", "traditional")
JUNK_KINDS = ("french", "german", "japanese", "too_short", "dup_lines", "ngram_repeat",
              "symbols", "digits", "menu", "boilerplate", "lorem")

SYMPTOMS = ["fever", "headache", "neck stiffness", "chest pain", "shortness of breath",
            "abdominal pain", "jaundice", "fatigue", "weight loss", "cough", "hematuria",
            "joint swelling", "palpitations", "syncope", "rash"]
DRUGS = [("amoxicillin", "500 mg PO q8h"), ("metformin", "500 mg PO BID"),
         ("lisinopril", "10 mg PO daily"), ("ceftriaxone", "2 g IV q24h"),
         ("atorvastatin", "40 mg PO nightly"), ("heparin", "5000 units SC q8h"),
         ("furosemide", "40 mg IV"), ("ethosuximide", "250 mg PO BID"),
         ("azithromycin", "500 mg PO on day 1"), ("prednisone", "40 mg PO daily")]
DIAGNOSES = ["bacterial meningitis", "acute myocardial infarction", "community-acquired "
             "pneumonia", "acute cholecystitis", "pulmonary embolism", "iron deficiency "
             "anemia", "type 2 diabetes", "absence seizures", "nephrotic syndrome",
             "rheumatoid arthritis"]
LABS = [("WBC", "x10^9/L", 3, 18), ("Hb", "g/dL", 7, 17), ("PLT", "x10^9/L", 90, 450),
        ("Na", "mmol/L", 128, 148), ("K", "mmol/L", 2.8, 5.9), ("Creatinine", "mg/dL", 0.5, 3),
        ("CRP", "mg/L", 1, 200), ("ALT", "U/L", 10, 300), ("Glucose", "mg/dL", 60, 400)]
ZH_SYMPTOMS = ["发热", "头痛", "胸痛", "呼吸困难", "腹痛", "黄疸", "乏力", "体重下降", "咳嗽", "心悸",
               "关节肿痛", "皮疹", "恶心呕吐", "腰痛", "失眠"]
ZH_DIAG = ["细菌性脑膜炎", "急性心肌梗死", "社区获得性肺炎", "急性胆囊炎", "肺栓塞", "缺铁性贫血",
           "2型糖尿病", "失神发作", "肾病综合征", "类风湿关节炎"]
ZH_LABS = [("白细胞", "×10^9/L", 3, 18), ("血红蛋白", "g/L", 70, 170), ("血小板", "×10^9/L", 90, 450),
           ("血钠", "mmol/L", 128, 148), ("血钾", "mmol/L", 2.8, 5.9), ("肌酐", "μmol/L", 50, 300),
           ("C反应蛋白", "mg/L", 1, 200), ("谷丙转氨酶", "U/L", 10, 300)]
TRAD = ["醫生說患者頭髮乾燥，應該注意營養與睡眠，並定期複查血常規。",
        "這位患者長期服用降壓藥物，血壓控制穩定，但近日出現頭暈與乏力的症狀。",
        "糖尿病患者應該控制飲食，規律運動，並監測血糖與糖化血紅蛋白的變化。"]
FRENCH = ["Le patient présente une fièvre et des céphalées depuis trois jours, avec une "
          "raideur de la nuque.", "Quel est le traitement de première intention de "
          "l'hypertension artérielle chez le sujet âgé ?", "Il faut réaliser une ponction "
          "lombaire en urgence et débuter une antibiothérapie probabiliste."]
GERMAN = ["Der Patient klagt seit drei Tagen über Fieber, Kopfschmerzen und Nackensteifigkeit.",
          "Welche Therapie ist bei einer ambulant erworbenen Pneumonie angezeigt?",
          "Eine Lumbalpunktion sollte sofort durchgeführt werden, danach Antibiotika."]
JAPANESE = ["患者は三日前から発熱と頭痛があり、項部硬直も認められます。", "高血圧の治療について教えてください。",
            "直ちに腰椎穿刺を行い、抗菌薬の投与を開始する必要があります。"]
MENU = ["Home", "About us", "Departments", "Our doctors", "Patients & visitors", "Contact",
        "Login", "Register", "Careers", "News", "Events", "Donate"]
ZH_MENU = ["首页", "关于我们", "科室介绍", "专家团队", "就医指南", "联系我们", "登录", "注册", "新闻中心"]
BOILER = ["All rights reserved.", "Privacy policy", "Terms of use", "This website uses "
          "cookies to improve your experience.", "Subscribe to our newsletter",
          "Click here to share this article"]
ZH_BOILER = ["版权所有 © 某某医院", "免责声明：本站内容仅供参考", "转载请注明出处", "扫一扫关注我们", "相关阅读",
             "责任编辑：小王"]


def _vignette_en(r: random.Random) -> tuple[str, str]:
    age, sex = r.randint(18, 85), r.choice(["man", "woman"])
    sym = r.sample(SYMPTOMS, 3)
    lab = r.choice(LABS)
    drug, dose = r.choice(DRUGS)
    q = (f"A {age}-year-old {sex} presents with {sym[0]}, {sym[1]} and {sym[2]} for "
         f"{r.randint(2, 14)} days. Blood pressure is {r.randint(90, 170)}/{r.randint(50, 100)} "
         f"mm Hg, pulse {r.randint(55, 130)}/min, temperature {r.uniform(36.2, 39.8):.1f}°C. "
         f"{lab[0]} is {r.uniform(lab[2], lab[3]):.1f} {lab[1]}. What is the most likely "
         f"diagnosis and the first step in management?")
    a = (f"The most likely diagnosis is {r.choice(DIAGNOSES)}. Start {drug} {dose} and "
         f"reassess in {r.randint(24, 72)} hours; monitor {r.choice(LABS)[0]} and renal function.")
    return q, a


def _labs(r: random.Random, labs, n: int) -> str:
    return "\n".join(f"{name} {r.uniform(lo, hi):.1f} {unit}"
                     for name, unit, lo, hi in r.sample(labs, n))


def _vignette_zh(r: random.Random) -> tuple[str, str]:
    sym = r.sample(ZH_SYMPTOMS, 3)
    lab = r.choice(ZH_LABS)
    q = (f"患者，{r.choice(['男', '女'])}，{r.randint(18, 85)}岁，因{sym[0]}、{sym[1]}伴{sym[2]}"
         f"{r.randint(2, 14)}天入院。查体：血压{r.randint(90, 170)}/{r.randint(50, 100)}mmHg，"
         f"心率{r.randint(55, 130)}次/分，体温{r.uniform(36.2, 39.8):.1f}℃。{lab[0]}"
         f"{r.uniform(lab[2], lab[3]):.1f}{lab[1]}。最可能的诊断是什么？如何处理？")
    a = (f"考虑{r.choice(ZH_DIAG)}。建议完善相关检查，给予对症支持治疗，必要时抗感染治疗，"
         f"{r.randint(24, 72)}小时后复查{r.choice(ZH_LABS)[0]}及肝肾功能。")
    return q, a


def document(kind: str, r: random.Random) -> tuple[str, str, str]:
    """(question, answer, lang) of one document of `kind`."""
    if kind == "vignette_en":
        return (*_vignette_en(r), "en")
    if kind == "short_en":
        d = r.choice(DIAGNOSES)
        return f"What is the first-line treatment for {d}?", r.choice(DRUGS)[0].capitalize(), "en"
    if kind == "labs_en":
        return "Interpret these laboratory results.", _labs(r, LABS, r.randint(4, 8)), "en"
    if kind == "dose_en":
        drug, dose = r.choice(DRUGS)
        return f"What is the usual adult dose of {drug}?", f"{dose}; max {r.randint(2, 4)} g/day.", "en"
    if kind == "vignette_zh":
        return (*_vignette_zh(r), "zh")
    if kind == "short_zh":
        return f"{r.choice(ZH_DIAG)}的首选检查是什么？", r.choice(["心电图", "胸部CT", "腰椎穿刺", "腹部B超"]), "zh"
    if kind == "labs_zh":
        return "请解读以下化验结果。", _labs(r, ZH_LABS, r.randint(4, 7)), "zh"
    if kind == "mixed_zh":
        drug, dose = r.choice(DRUGS)
        return (f"患者服用{drug.capitalize()} {dose}两周，{r.choice(ZH_SYMPTOMS)}未缓解，CRP "
                f"{r.randint(5, 120)} mg/L，下一步怎么办？",
                f"建议复查CRP和WBC，必要时换用{r.choice(DRUGS)[0].capitalize()}，并评估肝肾功能。", "zh")
    if kind == "mojibake_en":
        q, a = _vignette_en(r)
        a = a.replace("The most", "The patient’s most")
        return q, a.encode("utf-8").decode("windows-1252", errors="replace"), "en"
    if kind == "mojibake_zh":
        q, a = _vignette_zh(r)
        return q, a.encode("utf-8").decode("latin-1"), "zh"
    if kind == "html":
        q, a = _vignette_en(r)
        return q, f"<p>{a.replace('. ', '.</p><p>')}</p><br/>Dose &lt; 4 g&nbsp;/day", "en"
    if kind == "traditional":
        q, a = r.sample(TRAD, 2)
        return q, a, "zh"
    if kind == "french":
        return r.choice(FRENCH), r.choice(FRENCH), "en"
    if kind == "german":
        return r.choice(GERMAN), r.choice(GERMAN), "en"
    if kind == "japanese":
        return r.choice(JAPANESE), r.choice(JAPANESE), "zh"
    if kind == "too_short":
        return r.choice(["ok", "?", "嗯", "test", "a"]), "", "en"
    if kind == "dup_lines":
        line = r.choice(["Buy cheap medicine online now", "特价药品限时抢购", "Best clinic in town"])
        return line, "\n".join([line] * r.randint(4, 8) + ["Contact us"]), "en"
    if kind == "ngram_repeat":
        phrase = r.choice(["the best doctor for you", "cheap pills fast delivery", "最好的医院最好的医生"])
        return "Read this", " ".join([phrase] * r.randint(25, 40)), "en"
    if kind == "symbols":
        return "Offer", "".join(r.choice("@#$%^&*~+=<>|【】《》！？") for _ in range(r.randint(60, 120))), "en"
    if kind == "digits":
        return "Codes", " ".join(str(r.randint(1000, 99999)) for _ in range(r.randint(20, 40))), "en"
    if kind == "menu":
        items = MENU if r.random() < 0.5 else ZH_MENU
        return items[0], "\n".join(r.sample(items, r.randint(6, len(items)))), "en"
    if kind == "boilerplate":
        items = BOILER if r.random() < 0.5 else ZH_BOILER
        return "Footer", "\n".join(r.sample(items, 5)), "en"
    if kind == "lorem":
        return "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.", \
            "Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.", "en"
    raise ValueError(kind)


def corpus(n: int, seed: int = 0) -> list[dict]:
    """`n` documents: 80 % good (a sixth of them edit cases), 20 % planted junk."""
    r = random.Random(seed)
    docs = []
    for i in range(n):
        x = r.random()
        if x < 0.2:
            kind = JUNK_KINDS[i % len(JUNK_KINDS)]
        elif x < 0.333:
            kind = EDIT_KINDS[i % len(EDIT_KINDS)]
        else:
            kind = GOOD_KINDS[i % len(GOOD_KINDS)]
        q, a, lang = document(kind, r)
        docs.append({"id": f"bench/{kind}/{i:07d}", "kind": kind, "question": q,
                     "answer": a, "lang": lang})
    return docs


def write_inputs(docs: list[dict], folder: Path) -> None:
    """corpus.jsonl (`text` = question and answer, for Data-Juicer and datatrove) and
    rows.parquet (canonical rows: the question, the answer as the response)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meddata.schema import CANONICAL

    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            text = d["question"] + ("\n" + d["answer"] if d["answer"] else "")
            f.write(json.dumps({"id": d["id"], "text": text}, ensure_ascii=False) + "\n")
    writer = None
    for start in range(0, len(docs), 50_000):
        rows = [{"id": d["id"], "source": "bench", "subset": "default", "split": "train",
                 "lang": d["lang"], "task": "open_qa", "question": d["question"],
                 "context": None, "options": [], "answer_label": None, "answer": None,
                 "rationale": None, "response": d["answer"] or None, "meta": "{}",
                 "raw_sha1": f"{start:08x}", "turns": None}
                for d in docs[start:start + 50_000]]
        table = pa.Table.from_pylist(rows, schema=CANONICAL)
        writer = writer or pq.ParquetWriter(folder / "rows.parquet", CANONICAL)
        writer.write_table(table)
    writer.close()


# ---- the contenders, each run in its own process (--run NAME --data DIR) ------------------------
def run_meddata(folder: Path, language: bool = True) -> dict:
    import pyarrow.parquet as pq

    from meddata import canonical
    from meddata.schema import CANONICAL
    from meddata.store import Store

    store = Store(folder / "store")
    table = pq.ParquetFile(folder / "rows.parquet")
    v = store.publish("canonical", "bench", CANONICAL,
                      (b for b in table.iter_batches(batch_size=8192)))
    t0 = time.perf_counter()
    steps = [{"normalize": {}}, {"chinese": {"to": "simplified"}},
             *([{"language": {"keep": ["en", "zh"]}}] if language else []), {"quality": {}}]
    out = canonical.curate(store, v.ref, steps, "bench-curated")
    seconds = time.perf_counter() - t0
    kept = "kept-meddata.txt" if language else "kept-meddata-nolang.txt"
    with open(folder / kept, "w", encoding="utf-8") as f:
        for batch in out.iter_batches(columns=["id"], verify="none"):
            f.writelines(i + "\n" for i in batch.column("id").to_pylist())
    return {"seconds": seconds}


def run_data_juicer(folder: Path) -> dict:
    from data_juicer.config import init_configs
    from data_juicer.core import DefaultExecutor

    config = {
        "project_name": "curate-bench", "dataset_path": str(folder / "corpus.jsonl"),
        "export_path": str(folder / "dj" / "out.jsonl"), "np": 1, "text_keys": "text",
        "open_tracer": False, "use_cache": False, "work_dir": str(folder / "dj"),
        "process": [{"fix_unicode_mapper": {}}, {"clean_html_mapper": {}},
                    {"chinese_convert_mapper": {"mode": "t2s"}},
                    {"whitespace_normalization_mapper": {}}, {"text_length_filter": {}},
                    {"special_characters_filter": {}}, {"character_repetition_filter": {}},
                    {"word_repetition_filter": {}}, {"alphanumeric_filter": {}}],
    }
    import yaml

    path = folder / "dj.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    cfg = init_configs(args=["--config", str(path)])
    t0 = time.perf_counter()
    DefaultExecutor(cfg).run()
    seconds = time.perf_counter() - t0
    _kept_ids([folder / "dj" / "out.jsonl"], folder / "kept-dj.txt")
    return {"seconds": seconds}


def run_datatrove(folder: Path) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.formatters import FTFYFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    out = folder / "datatrove"
    executor = LocalPipelineExecutor(pipeline=[
        JsonlReader(str(folder), glob_pattern="corpus.jsonl", id_key="id"),
        FTFYFormatter(), GopherRepetitionFilter(), GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter(),
        JsonlWriter(str(out / "kept"), compression=None)],
        tasks=1, workers=1, logging_dir=str(out / "logs"))
    t0 = time.perf_counter()
    executor.run()
    seconds = time.perf_counter() - t0
    _kept_ids(sorted((out / "kept").glob("*.jsonl")), folder / "kept-datatrove.txt")
    return {"seconds": seconds}


def _kept_ids(files: list[Path], target: Path) -> None:
    """The ids of the kept documents, one a line, streamed (no list in memory)."""
    with open(target, "w", encoding="utf-8") as out:
        for file in files:
            with open(file, encoding="utf-8") as f:
                out.writelines(json.loads(line)["id"] + "\n" for line in f)


RUNNERS = {"meddata": run_meddata, "meddata-nolang": lambda f: run_meddata(f, language=False),
           "dj": run_data_juicer, "datatrove": run_datatrove}
NAMES = {"meddata": "meddata curate", "meddata-nolang": "meddata curate, no language step "
         "(the others' operations: their language filters need a download)",
         "dj": "Data-Juicer", "datatrove": "datatrove"}


def score(docs: list[dict], kept: set[str]) -> dict:
    junk = [d for d in docs if d["kind"] in JUNK_KINDS]
    good = [d for d in docs if d["kind"] not in JUNK_KINDS]
    junk_kept = Counter(d["kind"] for d in junk if d["id"] in kept)
    good_dropped = Counter(d["kind"] for d in good if d["id"] not in kept)
    right = sum(d["id"] not in kept for d in junk) + sum(d["id"] in kept for d in good)
    return {"agree": right / len(docs), "junk_dropped": 1 - sum(junk_kept.values()) / len(junk),
            "good_dropped": sum(good_dropped.values()) / len(good),
            "junk_kept_by_kind": dict(junk_kept), "good_dropped_by_kind": dict(good_dropped)}


def contend(name: str, folder: Path) -> dict:
    measured = run_tree([sys.executable, __file__, "--run", name, "--data", str(folder)],
                        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = json.loads((folder / f"result-{name}.json").read_text())
    with open(folder / f"kept-{name}.txt", encoding="utf-8") as f:
        kept = {line.rstrip("\n") for line in f}
    return {**result, "kept": kept, "wall_seconds": measured["seconds"],
            "peak_rss_mb": measured["peak_rss_mb"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--scale", type=int, default=5, help="meddata again on this many times "
                                                         "the documents (memory); 1: skip")
    ap.add_argument("--skip", default="", help="comma-separated: meddata-nolang, dj, datatrove")
    ap.add_argument("--keep-data", help="write the corpus and outputs here (kept)")
    ap.add_argument("--run", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        result = RUNNERS[args.run](Path(args.data))
        # a file, not stdout: Data-Juicer routes stdout into its logger
        (Path(args.data) / f"result-{args.run}.json").write_text(json.dumps(result))
        return

    skip = {s for s in args.skip.split(",") if s}
    base = Path(args.keep_data) if args.keep_data else Path(tempfile.mkdtemp(prefix="curate-"))
    try:
        folder = base / f"x{args.docs}"
        folder.mkdir(parents=True, exist_ok=True)
        docs = corpus(args.docs)
        write_inputs(docs, folder)
        print(f"{args.docs:,} documents: {sum(d['kind'] in JUNK_KINDS for d in docs):,} planted "
              f"junk, {sum(d['kind'] in EDIT_KINDS for d in docs):,} edit cases; "
              f"{os.cpu_count()} CPUs", flush=True)
        results = {}
        for name in ("meddata", "meddata-nolang", "dj", "datatrove"):
            if name in skip:
                continue
            r = contend(name, folder)
            results[name] = {**r, **score(docs, r.pop("kept"))}
            print(f"  {NAMES[name]}: {r['seconds']:.1f} s", flush=True)
        print()
        print("| tool | docs/s | peak RSS (MB) | decisions agree | junk dropped | good dropped |")
        print("|---|---|---|---|---|---|")
        for name, r in results.items():
            print(f"| {NAMES[name]} | {args.docs / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} "
                  f"| {r['agree']:.1%} | {r['junk_dropped']:.1%} | {r['good_dropped']:.2%} |")
        print()
        for name, r in results.items():
            print(f"{NAMES[name]}: junk kept by kind {r['junk_kept_by_kind']}; good dropped by "
                  f"kind {r['good_dropped_by_kind']}")
        if "meddata" in results and len(results) > 1:
            others = [args.docs / r["seconds"] for n, r in results.items()
                      if not n.startswith("meddata")]
            print(f"\nmeddata vs the faster other: "
                  f"{args.docs / results['meddata']['seconds'] / max(others):.2f}x docs/s")
            if "meddata-nolang" in results:
                print(f"meddata without its language step (the same operations as the "
                      f"others) vs the faster other: "
                      f"{args.docs / results['meddata-nolang']['seconds'] / max(others):.2f}x")
        if args.scale > 1 and "meddata" not in skip:
            big = base / f"x{args.docs * args.scale}"
            big.mkdir(parents=True, exist_ok=True)
            write_inputs(corpus(args.docs * args.scale, seed=1), big)
            r = contend("meddata", big)
            print(f"\nmemory: meddata peak RSS {results['meddata']['peak_rss_mb']:,.0f} MB at "
                  f"{args.docs:,} docs, {r['peak_rss_mb']:,.0f} MB at "
                  f"{args.docs * args.scale:,} ({args.docs * args.scale / r['seconds']:,.0f} "
                  f"docs/s)")
    finally:
        if not args.keep_data:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
