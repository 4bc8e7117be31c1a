"""What an evaluation prints and writes: the markdown comparison table, and the
lm-evaluation-harness output layout (results_<date>.json, samples_<task>_<date>.jsonl)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import forgetting, presets
from .metrics import ROUGE_TYPES


def sanitize(name: str) -> str:
    """A model or benchmark name as a file name (lm-eval's sanitize_model_name)."""
    return re.sub(r"[\"<>:/|\\?*\[\]@]+", "__", name)


def trained_on(model: dict[str, Any]) -> str:
    """The data behind a checkpoint, every stage of its chain: `sft sft/mcq@… → dpo
    preference/mcq@…`; '-' for a model meddata did not train."""
    chain = model.get("lineage")
    if not chain:
        return ", ".join(model.get("trained_on", [])) or "-"
    return " → ".join(f"{s['stage']} {', '.join(s['data'])}" for s in chain)


def markdown(report: dict[str, Any]) -> str:
    """The stage table: a row per model, a column per benchmark (medical first, then
    general, each marked), and the mean per domain with its change from the first row
    (evaluation/forgetting.py)."""
    benches = forgetting.ordered(report)
    first = report["models"][0]["results"] if report["models"] else {}
    extra, extra_cells = forgetting.summary_cells(report)
    head = "| model | trained on | " + " | ".join(
        f"{b} ({first.get(b, {}).get('domain', 'medical')})" for b in benches) + " |" + \
        "".join(f" {h} |" for h in extra)
    lines = [head, "|" + "---|" * (len(benches) + 2 + len(extra))]
    for m, summary in zip(report["models"], extra_cells):
        cells = []
        for b in benches:
            r = m["results"][b]
            parts = []
            if "accuracy" in r:
                parts.append(f"{100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, "
                             f"{100 * r['ci95'][1]:.1f}] (n={r['items']})")
                if "multiple" in r:
                    parts.append(f"single {100 * r['single']['accuracy']:.1f} "
                                 f"(n={r['single']['n']}), multiple "
                                 f"{100 * r['multiple']['accuracy']:.1f} "
                                 f"(n={r['multiple']['n']})")
            if "open_items" in r:
                parts.append(f"BLEU-1 {r['bleu']['bleu1']:.1f}, BLEU-4 {r['bleu']['bleu4']:.1f}, "
                             f"ROUGE-1 {r['rouge']['rouge1']:.1f}, ROUGE-L "
                             f"{r['rouge']['rougeL']:.1f} (n={r['open_items']})")
            if "per_case" in r:
                parts.append(f"per case ROUGE-L {r['per_case']['rouge']['rougeL']:.1f} "
                             f"(cases={r['per_case']['cases']})")
            cells.append("; ".join(parts) or "-")
        lines.append(f"| {m['model']} | {trained_on(m)} | "
                     + " | ".join(cells) + " |" + "".join(f" {c} |" for c in summary))
    return "\n".join(lines)


# ---- lm-evaluation-harness's output layout --------------------------------------------------------
def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lm_eval_sample(doc_id: int, item: dict[str, Any]) -> dict[str, Any]:
    """One item as a line of lm-eval's samples_<task>_<date>.jsonl."""
    doc = {"id": item["id"], "subject": item.get("subject")}
    if "choices" in item:  # loglik: one request per choice
        target = item["choices"].index(item["gold"]) if item["gold"] in item["choices"] else -1
        arguments = {f"gen_args_{j}": {"arg_0": item["prompt"], "arg_1": cont}
                     for j, cont in enumerate(item["continuations"])}
        resps = [[[ll, g]] for ll, g in zip(item["logliks"], item["greedy"])]
        filtered = [[ll, g] for ll, g in zip(item["logliks"], item["greedy"])]
        metrics = {"acc": float(item["correct"])}
    else:
        target = item["gold"]
        arguments = {"gen_args_0": {"arg_0": item["prompt"], "arg_1": {"do_sample": False}}}
        resps, filtered = [[item["output"]]], [item.get("extracted", item["output"])]
        metrics = {"exact_match": float(item["correct"])} if "correct" in item else {
            t: item[t] for t in ROUGE_TYPES}
    return {"doc_id": doc_id, "doc": doc, "target": str(target), "arguments": arguments,
            "resps": resps, "filtered_resps": filtered, "filter": "none",
            "metrics": list(metrics), "doc_hash": _sha256(json.dumps(doc, indent=2,
                                                                     ensure_ascii=False)),
            "prompt_hash": _sha256(item["prompt"]), "target_hash": _sha256(str(target)),
            **metrics}


def write_lm_eval_layout(report: dict[str, Any], out: Path) -> list[Path]:
    """out/<model>/results_<date>.json and samples_<task>_<date>.jsonl, as lm-eval's
    --output_path writes them, from the per-item files under out/items; a task is a
    preset (mmlu_anatomy, medqa_4options, ...), or <preset>__<benchmark> when two
    benchmarks share one.

    The results file is written by lm-eval's own EvaluationTracker (its folder naming,
    date id, task hashes and general config fields); the samples files are streamed
    item by item beside it (the tracker would hold every sample in memory) and named with
    the tracker's date id, as lm-eval names them."""
    from lm_eval.loggers import EvaluationTracker

    written = []
    for m in report["models"]:
        tracker = EvaluationTracker(output_path=str(out))
        tracker.general_config_tracker.log_experiment_args(
            model_source="hf", model_args={"pretrained": m["model"]},
            system_instruction=None, chat_template=None, fewshot_as_multiturn=False)
        folder = out / tracker.general_config_tracker.model_name_sanitized
        folder.mkdir(parents=True, exist_ok=True)
        date = f"partial-{os.getpid()}"
        task_hashes: dict[str, list[str]] = defaultdict(list)
        samples_files: dict[str, Path] = {}
        benches_of = defaultdict(int)
        for r in m["results"].values():
            for p in r["presets"]:
                benches_of[p] += 1
        sums: dict[str, dict[str, list[float]]] = {}   # task -> metric -> [n, sum, squares]
        meta: dict[str, dict[str, Any]] = {}
        doc_ids: dict[str, int] = defaultdict(int)
        for ref, r in m["results"].items():
            bench = sanitize(ref.split("@")[0].split("/", 1)[1])
            files: dict[str, Any] = {}
            try:
                with (out / r["items_file"]).open(encoding="utf-8") as items:
                    for line in items:
                        item = json.loads(line)
                        task = item["preset"] if benches_of[item["preset"]] == 1 \
                            else f"{item['preset']}__{bench}"
                        if task not in files:
                            path = folder / f"samples_{task}_{date}.jsonl"
                            files[task] = path.open("w", encoding="utf-8")
                            samples_files[task] = path
                            sums[task] = {}
                            meta[task] = {"bench": ref, "preset": item["preset"],
                                          "open": "correct" not in item}
                        sample = lm_eval_sample(doc_ids[task], item)
                        doc_ids[task] += 1
                        files[task].write(json.dumps(sample, ensure_ascii=False) + "\n")
                        task_hashes[task].append(sample["doc_hash"] + sample["prompt_hash"]
                                                 + sample["target_hash"])
                        for metric in sample["metrics"]:
                            n, total, squares = sums[task].get(metric, (0, 0.0, 0.0))
                            value = float(sample[metric])
                            sums[task][metric] = [n + 1, total + value, squares + value * value]
            finally:
                for f in files.values():
                    f.close()
        results, configs, n_samples = {}, {}, {}
        for task, metrics in sums.items():
            preset = presets.PRESETS.get(meta[task]["preset"], presets.PRESETS["meddata"])
            results[task] = {"alias": task}
            for metric, (n, total, squares) in metrics.items():
                mean = total / n
                var = (squares - n * mean * mean) / (n - 1) if n > 1 else 0.0
                results[task][f"{metric},none"] = mean
                results[task][f"{metric}_stderr,none"] = math.sqrt(max(var, 0.0) / n)
            n = int(next(iter(metrics.values()))[0])
            configs[task] = {
                "task": task, "num_fewshot": report["shots"],
                "output_type": "multiple_choice" if report["method"] == "loglik"
                and not meta[task]["open"] else "generate_until",
                "target_delimiter": preset.delimiter, "fewshot_delimiter": "\n\n",
                "metadata": {"meddata_bench": meta[task]["bench"], "follows": preset.follows,
                             "version": 1.0}}
            n_samples[task] = {"original": n, "effective": n}
        results_dict = {
            "results": results, "group_subtasks": {t: [] for t in results},
            "configs": configs, "versions": dict.fromkeys(results, 1.0),
            "n-shot": dict.fromkeys(results, report["shots"]),
            "higher_is_better": {t: {k.split(",")[0]: True for k in v
                                     if k.endswith(",none") and "_stderr" not in k}
                                 for t, v in results.items()},
            "n-samples": n_samples,
            "config": {"model": "hf", "model_args": f"pretrained={m['model']}",
                       "limit": report["limit"]},
            "date": time.time(),
            "meddata": {"prompt": report["prompt"], "split": report["split"],
                        "method": report["method"]},
        }
        # the tracker hashes each task's samples as lm-eval does (doc+prompt+target hashes)
        tracker.save_results_aggregated(
            results=results_dict,
            samples={t: [{"doc_hash": h, "prompt_hash": "", "target_hash": ""} for h in hashes]
                     for t, hashes in task_hashes.items()})
        date_id = getattr(tracker, "date_id", None)
        result_file = folder / f"results_{date_id}.json"
        if not date_id or not result_file.exists():
            raise OSError(f"lm-eval's EvaluationTracker did not write {result_file}")
        written.append(result_file)
        for task, path in samples_files.items():
            final = folder / f"samples_{task}_{date_id}.jsonl"
            path.replace(final)
            written.append(final)
    return written
