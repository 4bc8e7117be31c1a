"""A benchmark version as an lm-evaluation-harness task folder: `meddata export REF --format
lm-eval --out DIR` writes DIR/meddata_<name>.yaml and its data (one JSON Lines file per
split), and `lm_eval --tasks meddata_<name> --include_path DIR ...` then scores any model
on exactly the prompts and choices `meddata eval` uses (log-likelihood, zero-shot).

Each data line holds the item's prompt as meddata's preset writes it (`query`: lm-eval's
own prompt for the benchmarks it has, CMB's for CMExam and CMB, meddata's for the rest, or
meddata's everywhere with `prompt="meddata"`), its scored continuations (`choices`: " A",
" B", ... or, for several correct answers, every set of letters) and the index of the gold
one (`gold`). The task is lm-eval's `multiple_choice` with an empty `target_delimiter` (the
delimiter is already in each choice), so lm-eval requests the same (context, continuation)
pairs meddata scores, and its `acc` is meddata's accuracy. Open-answer items and items
without a gold answer are left out and counted.

The YAML names its data files by absolute path (lm-eval's `dataset_path: json`); export
again after moving the folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import presets
from .runner import CLOSED, reference


def task_name(version) -> str:
    return "meddata_" + re.sub(r"[^A-Za-z0-9_]+", "_", version.name)


def export_task(version, out_dir: str | Path, prompt: str = "lm-eval",
                batch_rows: int = 4_096) -> tuple[list[Path], dict[str, int]]:
    """Write the task folder; returns (files written, counts of items written and left
    out). Reads the version in batches; each item is written as it is read."""
    import yaml

    if version.kind != "canonical":
        raise ValueError(f"{version.ref}: an lm-eval task is made from a canonical benchmark "
                         f"version (this is {version.kind})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = task_name(version)
    counts = {"items": 0, "open_or_unanswered": 0}
    files: dict[str, str] = {}
    written: list[Path] = []
    used: set[str] = set()
    for split in version.splits:
        path = (out / f"{name}_{split}.jsonl").resolve()
        n = 0
        with path.open("w", encoding="utf-8") as f:
            for batch in version.iter_batches(split=split, batch_size=batch_rows):
                for row in batch.to_pylist():
                    if row["task"] not in CLOSED or reference(row) is None:
                        counts["open_or_unanswered"] += 1
                        continue
                    preset = presets.for_row(row, prompt)
                    used.add(preset.follows)
                    labels, continuations = preset.choices(row)
                    if row["answer_label"] not in labels:
                        counts["open_or_unanswered"] += 1
                        continue
                    f.write(json.dumps({
                        "id": row["id"], "preset": preset.name, "query": preset.context(row),
                        "choices": continuations, "labels": labels,
                        "gold": labels.index(row["answer_label"])}, ensure_ascii=False) + "\n")
                    n += 1
        if n:
            files[split] = str(path)
            written.append(path)
            counts["items"] += n
        else:
            path.unlink()
    if not files:
        raise ValueError(f"{version.ref}: no multiple-choice or yes/no item with a gold answer; "
                         "nothing for an lm-eval multiple_choice task")
    test = "test" if "test" in files else next(iter(files))
    config = {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
        "test_split": test, "output_type": "multiple_choice",
        "doc_to_text": "query", "doc_to_choice": "choices", "doc_to_target": "gold",
        "target_delimiter": "", "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "meddata_bench": version.ref, "prompt": prompt,
                     "follows": sorted(used)},
    }
    for split in ("validation", "train", "dev"):
        if split in files and split != test:
            key = "validation_split" if split == "validation" else "training_split"
            config.setdefault(key, split)
    yaml_path = out / f"{name}.yaml"
    yaml_path.write_text(
        f"# {version.ref}, exported by meddata: prompts and choices as `meddata eval "
        f"--prompt {prompt}` scores them\n" + yaml.safe_dump(config, sort_keys=False,
                                                             allow_unicode=True),
        encoding="utf-8")
    return [yaml_path, *written], counts
