"""meddata's evaluation next to lm-evaluation-harness's own, on the same items and model.

For each benchmark lm-eval has, the raw source file is written out in the layout of the hub
data set lm-eval's task names (GBaker/MedQA-USMLE-4-options-hf, openlifescienceai/medmcqa,
bigbio/pubmed_qa, cais/mmlu, ceval/ceval-exam, haonan-li/cmmlu), and lm-eval runs its own task from the YAML it ships, with
only the data set swapped for those local files (a task file that `include`s lm-eval's,
as its docs describe for new tasks). meddata converts the same raw file with its own
converter and runs `meddata eval`'s code on the canonical rows. Items are matched by
question, and compared prompt by prompt and choice by choice.

Used by tests/test_lm_eval_parity.py (the tests' tiny model) and
benchmarks/lm_eval_parity.py (SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# task -> (the lm-eval task file it includes, the split lm-eval evaluates)
TASKS = {
    "medqa_4options": ("medqa/medqa.yaml", "test"),
    "medmcqa": ("medmcqa/medmcqa.yaml", "validation"),
    "pubmedqa": ("pubmedqa/pubmedqa.yaml", "test"),
}
# tasks per subject: prefix -> the lm-eval task file of a subject
SUBJECT_TASKS = {"mmlu_": "mmlu/default/mmlu_{subject}.yaml",
                 "ceval-valid_": "ceval/ceval-valid_{subject}.yaml",
                 "cmmlu_": "cmmlu/cmmlu_{subject}.yaml"}
CONVERTER = {"medqa_4options": "medqa", "medmcqa": "medmcqa", "pubmedqa": "pubmedqa"}


# ---- raw files in the layouts lm-eval's tasks read -------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def medqa_docs(path: Path) -> list[dict[str, Any]]:
    """MedQA jsonl (question, options {A..D}, answer_idx) -> GBaker's layout (sent1,
    ending0-3, label); questions with other than four options are left out."""
    docs = []
    for r in read_jsonl(path):
        if sorted(r["options"]) != ["A", "B", "C", "D"]:
            continue
        docs.append({"sent1": r["question"], "label": "ABCD".index(r["answer_idx"]),
                     **{f"ending{i}": r["options"][k] for i, k in enumerate("ABCD")}})
    return docs


def medmcqa_docs(path: Path) -> list[dict[str, Any]]:
    """MedMCQA's release (cop 1-4) -> the hub layout lm-eval reads (cop 0-3)."""
    return [{"id": r["id"], "question": r["question"], "opa": r["opa"], "opb": r["opb"],
             "opc": r["opc"], "opd": r["opd"], "cop": int(r["cop"]) - 1}
            for r in read_jsonl(path) if r.get("cop") not in (None, "", -1)]


def pubmedqa_docs(path: Path) -> list[dict[str, Any]]:
    """PubMedQA's ori_pqal.json (an object keyed by PMID) -> bigbio's source layout."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [{"QUESTION": r["QUESTION"], "CONTEXTS": r["CONTEXTS"],
             "final_decision": r["final_decision"]} for r in data.values()]


def mmlu_docs(path: Path) -> list[dict[str, Any]]:
    """An original MMLU CSV (no header: question, A-D, answer letter) -> cais/mmlu's
    layout (question, subject, choices, answer 0-3)."""
    subject = path.stem.rsplit("_", 1)[0]
    with path.open(encoding="utf-8", newline="") as f:
        return [{"question": q, "subject": subject, "choices": [a, b, c, d],
                 "answer": "ABCD".index(ans.strip())} for q, a, b, c, d, ans in csv.reader(f)]


def ceval_docs(path: Path) -> list[dict[str, Any]]:
    """A C-Eval release CSV (header id,question,A-D,answer[,explanation]) -> the layout of
    ceval/ceval-exam that lm-eval reads (the same columns; explanation "" when absent)."""
    with path.open(encoding="utf-8", newline="") as f:
        return [{"id": int(r["id"]), "question": r["question"],
                 **{k: r[k] for k in "ABCD"}, "answer": r["answer"],
                 "explanation": r.get("explanation") or ""} for r in csv.DictReader(f)]


def cmmlu_docs(path: Path) -> list[dict[str, Any]]:
    """A CMMLU release CSV (header ,Question,A-D,Answer) -> haonan-li/cmmlu's layout."""
    with path.open(encoding="utf-8", newline="") as f:
        return [{"Question": r["Question"], **{k: r[k] for k in "ABCD"},
                 "Answer": r["Answer"]} for r in csv.DictReader(f)]


def question_of(task: str, doc: dict[str, Any]) -> str:
    return doc.get("sent1") or doc.get("QUESTION") or doc.get("Question") or doc["question"]


# ---- lm-eval's side -------------------------------------------------------------------------------
def task_file(task: str, docs: dict[str, list[dict[str, Any]]], folder: Path) -> str:
    """Write the docs and a task file that includes lm-eval's own; returns the task name."""
    import lm_eval

    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    prefix = next((p for p in SUBJECT_TASKS if task.startswith(p)), None)
    if prefix:
        include = SUBJECT_TASKS[prefix].format(subject=task[len(prefix):])
    else:
        include, _ = TASKS[task]
    files = {}
    for split, rows in docs.items():
        files[split] = str(folder / f"{task}_{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                              for r in rows), encoding="utf-8")
    name = f"parity_{task}"
    config = {"include": str(tasks_dir / include), "task": name, "dataset_path": "json",
              "dataset_name": None, "dataset_kwargs": {"data_files": files},
              "training_split": None, "validation_split": None, "tag": [],
              "test_split": next(iter(docs)) if "test" not in docs else "test"}
    if "dev" in docs:
        config["fewshot_split"] = "dev"
    import yaml

    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return name


def run_lm_eval(lm, tasks: dict[str, dict[str, list]], folder: Path, shots: int
                ) -> dict[str, list[dict[str, Any]]]:
    """lm-eval's samples per task: {task: [sample with arguments, resps, acc, doc]}."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    names = {task: task_file(task, docs, folder) for task, docs in tasks.items()}
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    out = simple_evaluate(model=lm, tasks=list(names.values()), task_manager=manager,
                          num_fewshot=shots, log_samples=True, bootstrap_iters=0)
    return {task: sorted(out["samples"][name], key=lambda s: s["doc_id"])
            for task, name in names.items()}


# ---- the comparison --------------------------------------------------------------------------------
@dataclass
class Agreement:
    task: str
    items: int = 0
    unmatched: int = 0
    prompts_equal: int = 0
    choices_equal: int = 0
    gold_equal: int = 0
    predictions_agree: int = 0
    correct_lm_eval: int = 0
    correct_meddata: int = 0
    gaps: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"task": self.task, "items": self.items, "unmatched": self.unmatched,
                "prompts_equal": self.prompts_equal, "choices_equal": self.choices_equal,
                "gold_equal": self.gold_equal, "predictions_agree": self.predictions_agree,
                "accuracy_lm_eval": self.correct_lm_eval / self.items if self.items else 0.0,
                "accuracy_meddata": self.correct_meddata / self.items if self.items else 0.0,
                "max_gap": max(self.gaps, default=0.0),
                "median_gap": statistics.median(self.gaps) if self.gaps else 0.0}


def compare(task: str, samples: list[dict[str, Any]], items: list[dict[str, Any]],
            questions: dict[str, str]) -> Agreement:
    """lm-eval's samples against meddata's per-item records (matched by question)."""
    by_question: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_question.setdefault(questions[item["id"]].strip(), []).append(item)
    agreement = Agreement(task)
    for sample in samples:
        candidates = by_question.get(question_of(task, sample["doc"]).strip())
        if not candidates:
            agreement.unmatched += 1
            continue
        item = candidates.pop(0)
        contexts = [args[0] for args in sample["arguments"]]
        conts = [args[1] for args in sample["arguments"]]
        logliks = [float(r[0][0]) for r in sample["resps"]]
        agreement.items += 1
        agreement.prompts_equal += all(c == item["prompt"] for c in contexts)
        agreement.choices_equal += conts == item["continuations"]
        gold = item["choices"][sample["target"]] if isinstance(sample["target"], int) \
            else sample["target"]
        agreement.gold_equal += str(gold) == item["gold"]
        lm_pred = max(range(len(logliks)), key=logliks.__getitem__)
        agreement.predictions_agree += item["choices"][lm_pred] == item["pred"]
        agreement.correct_lm_eval += bool(sample["acc"])
        agreement.correct_meddata += bool(item["correct"])
        if len(logliks) == len(item["logliks"]):
            agreement.gaps += [abs(a - b) for a, b in zip(logliks, item["logliks"])]
    return agreement


def run_meddata(model: str, store, refs: dict[str, str], shots: int, folder: Path,
                batch_size: int = 8) -> tuple[dict[str, list], dict[str, str]]:
    """meddata eval's per-item records per task, and every row's question by id."""
    from .runner import EvalConfig, evaluate
    from .scorer import Scorer

    scorer = Scorer(model, batch_size)
    records, questions = {}, {}
    for task, (ref, split) in refs.items():
        version = store.resolve(ref)
        path = folder / f"meddata_{task}.jsonl"
        evaluate(scorer, version, EvalConfig(split=split, shots=shots, batch_size=batch_size),
                 progress=False, items_path=path)
        records[task] = read_jsonl(path)
        for batch in version.iter_batches(columns=["id", "question"]):
            questions.update(zip(batch.column("id").to_pylist(),
                                 batch.column("question").to_pylist()))
    return records, questions
