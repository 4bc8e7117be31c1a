"""Benchmark presets: the prompt, the choices and the few-shot pool of each benchmark,
named like lm-evaluation-harness tasks where one exists and written to give its prompts
byte for byte (tests/test_lm_eval_parity.py runs lm-eval 0.4.13's own task code on the
same items and compares).

| preset | follows | prompt |
|---|---|---|
| medqa_4options | lm-eval `medqa_4options` (preprocess_medqa.doc_to_text) | `Question: {q}\\nA. ..\\n...Answer:` (also used for 5-option MedQA) |
| medmcqa | lm-eval `medmcqa` (utils_medmcqa.doc_to_text) | `Question: {q}\\nChoices:\\nA. ..\\n...Answer:` |
| pubmedqa | lm-eval `pubmedqa` (preprocess_pubmedqa.doc_to_text) | `Abstract: {contexts}\\nQuestion: {q}\\nAnswer:`, choices yes / no / maybe |
| mmlu_<subject> | lm-eval `mmlu_<subject>` (_default_template_yaml) | the header "The following are multiple choice questions (with answers) about {subject}.\\n\\n", then `{q}\\nA. ..\\nAnswer:`; few-shot from the dev split, first n |
| ceval-valid_<subject> | lm-eval `ceval-valid_<subject>` (_default_ceval_yaml) | "以下是中国关于{科目}的单项选择题，请选出其中的正确答案。\\n\\n", then `{q}\\nA. ..\\n答案：`; few-shot from dev, first n |
| cmmlu_<subject> | lm-eval `cmmlu_<subject>` (_default_template_yaml) | "以下是关于{科目}的单项选择题，请直接给出正确答案的选项。\\n\\n", then as C-Eval |
| cmexam | CMB's query_prompt_2 wording (CMExam released none), plus the cue 答案： | 以下是中国执业医师资格考试的一道单项选择题，不需要做任何分析和解释，直接输出答案选项。... 答案： |
| cmb | CMB's released prompt (workers/base.py, query_prompt_2), plus the cue 答案： | 以下是中国{exam_type}中{exam_class}考试的一道{question_type}，不需要做任何分析和解释，直接输出答案选项。... 答案： |
| meddata | meddata's own plain style (any other source) | the question, an options block, `Answer:` / `答案：` |

A preset turns a canonical row into the context and the choice continuations the
log-likelihood method scores: lm-eval's target delimiter (" ") before each choice, and
its few-shot delimiter ("\\n\\n"). A question with several correct options is scored over
every non-empty set of its option letters ("AC", "ABD", ...), so only the exact set
counts.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

LM_EVAL = "lm-evaluation-harness 0.4.13"
MMLU_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
MAX_SET_OPTIONS = 6  # a multiple-answer question with more options is scored by generation


def _options(row: dict[str, Any]) -> str:
    return "".join(f"{o['label']}. {o['text']}\n" for o in row["options"])


def _pubmed_contexts(row: dict[str, Any]) -> str:
    """PubMedQA's CONTEXTS joined by newlines, as lm-eval does: the canonical context
    carries "LABEL: text" lines, whose labels meta records."""
    lines = (row.get("context") or "").split("\n")
    labels = json.loads(row.get("meta") or "{}").get("labels") or []
    if len(labels) == len(lines) and all(line.startswith(f"{lab}: ")
                                         for lab, line in zip(labels, lines)):
        lines = [line[len(lab) + 2:] for lab, line in zip(labels, lines)]
    return "\n".join(lines)


def multiple(row: dict[str, Any]) -> bool:
    """A question with more than one correct option."""
    return row["task"] == "mcq" and len(row.get("answer_label") or "") > 1


@dataclass
class Preset:
    name: str
    follows: str
    delimiter: str = " "        # before each choice (lm-eval's target_delimiter)
    fewshot_split: str | None = None

    def description(self, row: dict[str, Any]) -> str:
        return ""

    def text(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def labels(self, row: dict[str, Any]) -> list[str]:
        """The answers scored: letters, yes/no/maybe, or every set of letters."""
        if row["task"] == "yes_no":
            return ["yes", "no", "maybe"]
        labels = [o["label"] for o in row["options"]]
        if multiple(row) and len(labels) <= MAX_SET_OPTIONS:
            return ["".join(c) for n in range(1, len(labels) + 1)
                    for c in itertools.combinations(labels, n)]
        return labels

    def target(self, row: dict[str, Any], label: str, texts: bool = False) -> str:
        """The text that stands for `label` after the prompt: the label itself, or (with
        `texts`, single-answer questions) the option's text."""
        if texts and row["task"] == "mcq" and not multiple(row):
            return next(o["text"] for o in row["options"] if o["label"] == label)
        return label

    def choices(self, row: dict[str, Any], texts: bool = False
                ) -> tuple[list[str], list[str]]:
        """(labels, continuations): each continuation is the delimiter and its target."""
        labels = self.labels(row)
        return labels, [self.delimiter + self.target(row, lab, texts) for lab in labels]

    def context(self, row: dict[str, Any], shots: list[dict[str, Any]] = (),
                texts: bool = False, passages: str = "") -> str:
        """What precedes a choice: the description, the few-shot examples with their
        answers, retrieved passages (eval --rag), then the question."""
        examples = "".join(
            f"{self.text(s)}{self.delimiter}{self.target(s, s['answer_label'], texts)}\n\n"
            for s in shots)
        return self.description(row) + examples + passages + self.text(row)


class MedQA(Preset):
    def text(self, row):
        return f"Question: {row['question']}\n{_options(row)}Answer:"


class MedMCQA(Preset):
    def text(self, row):
        return "Question: " + row["question"] + "\nChoices:\n" + _options(row) + "Answer:"


class PubMedQA(Preset):
    def text(self, row):
        return f"Abstract: {_pubmed_contexts(row)}\nQuestion: {row['question']}\nAnswer:"


class MMLU(Preset):
    def description(self, row):
        subject = json.loads(row.get("meta") or "{}").get("subject") or row.get("subset", "")
        return MMLU_HEADER.format(subject=subject.replace("_", " "))

    def text(self, row):
        return row["question"].strip() + "\n" + "".join(
            f"{o['label']}. {o['text']}\n" for o in row["options"]) + "Answer:"


class CMB(Preset):
    def text(self, row):
        meta = json.loads(row.get("meta") or "{}")
        qtype = meta.get("question_type") or ("多项选择题" if multiple(row) else "单项选择题")
        head = (f"以下是中国{meta.get('exam_type') or '医师考试'}中{meta.get('exam_class') or '执业医师'}"
                f"考试的一道{qtype}，不需要做任何分析和解释，直接输出答案选项。")
        options = "\n".join(f"{o['label']}. {o['text']}" for o in row["options"]
                            if len(o["text"]) > 1)
        return f"{head}\n{row['question']}\n{options}\n答案："


class CMExam(CMB):
    def text(self, row):
        qtype = "多项选择题" if multiple(row) else "单项选择题"
        options = "\n".join(f"{o['label']}. {o['text']}" for o in row["options"])
        return (f"以下是中国执业医师资格考试的一道{qtype}，不需要做任何分析和解释，直接输出答案选项。"
                f"\n{row['question']}\n{options}\n答案：")


class CEval(Preset):
    """lm-eval's ceval-valid_<subject>: the subject's Chinese name (the converter's meta
    `subject_zh`) in the description, then the question, A-D and 答案：."""

    header = "以下是中国关于{name}的单项选择题，请选出其中的正确答案。\n\n"

    def description(self, row):
        meta = json.loads(row.get("meta") or "{}")
        return self.header.format(name=meta.get("subject_zh") or meta.get("subject")
                                  or row.get("subset", ""))

    def text(self, row):
        return row["question"].strip() + "\n" + "".join(
            f"{o['label']}. {o['text']}\n" for o in row["options"]) + "答案："


class CMMLU(CEval):
    """lm-eval's cmmlu_<subject>: CEval's prompt under CMMLU's description."""

    header = "以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"


class Plain(Preset):
    """meddata's own style (the sources lm-eval has no task for)."""

    def text(self, row):
        from meddata.builders import render

        cue = "答案：" if row.get("lang") == "zh" else "Answer:"
        return f"{render.prompt_text(row, 'plain')}\n{cue}"


MMLU_MEDICAL = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                "medical_genetics", "professional_medicine")
PRESETS: dict[str, Preset] = {
    "medqa_4options": MedQA("medqa_4options", f"{LM_EVAL} medqa_4options"),
    "medmcqa": MedMCQA("medmcqa", f"{LM_EVAL} medmcqa"),
    "pubmedqa": PubMedQA("pubmedqa", f"{LM_EVAL} pubmedqa"),
    **{f"mmlu_{s}": MMLU(f"mmlu_{s}", f"{LM_EVAL} mmlu_{s}", fewshot_split="dev")
       for s in MMLU_MEDICAL},
    "cmexam": CMExam("cmexam", "CMB's query_prompt_2 wording (CMExam released none), "
                     "then 答案：", delimiter=""),
    "cmb": CMB("cmb", "CMB's released query_prompt_2 (workers/base.py), then 答案：",
               delimiter=""),
    "meddata": Plain("meddata", "meddata's plain prompt"),
    "ceval-valid": CEval("ceval-valid", f"{LM_EVAL} ceval-valid", fewshot_split="dev"),
    "cmmlu": CMMLU("cmmlu", f"{LM_EVAL} cmmlu", fewshot_split="dev"),
}


def for_row(row: dict[str, Any], style: str = "lm-eval") -> Preset:
    """The preset for a canonical row: by its source (and subject), or meddata's own when
    `style` is `meddata` or the source has none."""
    if style == "meddata":
        return PRESETS["meddata"]
    source = row.get("source")
    if source == "medqa":
        return PRESETS["medqa_4options"]
    if source in ("medmcqa", "pubmedqa", "cmexam", "cmb"):
        return PRESETS[source]
    if source == "mmlu":
        subject = json.loads(row.get("meta") or "{}").get("subject") or row.get("subset")
        name = f"mmlu_{subject}"
        return PRESETS.get(name) or MMLU(name, f"{LM_EVAL} mmlu_{subject}",
                                         fewshot_split="dev")
    if source in ("ceval", "cmmlu"):  # one task per subject, as lm-eval names them
        subject = json.loads(row.get("meta") or "{}").get("subject") or row.get("subset")
        group = "ceval-valid" if source == "ceval" else "cmmlu"
        cls = CEval if source == "ceval" else CMMLU
        return cls(f"{group}_{subject}", f"{LM_EVAL} {group}_{subject}", fewshot_split="dev")
    return PRESETS["meddata"]
