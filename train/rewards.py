"""Reward functions over the `prompts` columns, for GRPOTrainer / RLOOTrainer.

TRL calls each as f(prompts=, completions=, completion_ids=, trainer_state=, **columns)
where the columns include `answer`, `answer_label`, `options` and `task`; a None score
leaves that row out of this reward. Reading the answer out of a completion is in
answers.py, shared with the judge and evaluation.
"""

from __future__ import annotations

import re
from typing import Any

from meddata.evaluation.answers import (
    after_think,
    completion_text,
    extract_decision,
    extract_letters,
)
from meddata.text import normalize_key


def mcq_exact(prompts, completions, answer_label=None, task=None, options=None, **kwargs):
    """1.0 when the extracted letters (MCQ: the exact set, so a question with several correct
    options needs all of them and no other) or decision (yes/no) equal the gold ones, else
    0.0; None for rows without a gold label (open questions)."""
    out = []
    for i, completion in enumerate(completions):
        text = completion_text(completion)
        gold = answer_label[i] if answer_label else None
        kind = task[i] if task else "mcq"
        if not gold:
            out.append(None)
        elif kind == "yes_no":
            out.append(1.0 if extract_decision(text) == gold else 0.0)
        else:
            labels = "".join(o["label"] for o in options[i]) if options and options[i] \
                else "ABCDEFGHIJ"
            out.append(1.0 if extract_letters(text, labels) == "".join(sorted(gold)) else 0.0)
    return out


_THINK_FORMAT = re.compile(r"^\s*<think>(?:(?!<think>|</think>).)+</think>\s*\S", re.S)


def think_format(prompts, completions, **kwargs):
    """1.0 for exactly one <think>...</think> block, first, followed by an answer."""
    out = []
    for completion in completions:
        text = completion_text(completion)
        ok = bool(_THINK_FORMAT.match(text)) and text.count("<think>") == 1 and \
            text.count("</think>") == 1
        out.append(1.0 if ok else 0.0)
    return out


def answer_match(prompts, completions, answer=None, **kwargs):
    """1.0 when the normalized text after </think> contains the normalized gold answer."""
    out = []
    for i, completion in enumerate(completions):
        gold = normalize_key(answer[i]) if answer and answer[i] else ""
        if not gold:
            out.append(None)
            continue
        out.append(1.0 if gold in normalize_key(after_think(completion_text(completion)))
                   else 0.0)
    return out


REWARDS = {"mcq_exact": mcq_exact, "think_format": think_format, "answer_match": answer_match}


def judge_reward(judge_config: dict[str, Any]):
    """An async reward function named `judge` (TRL logs rewards by function name)."""
    from .judge import Judge

    grader = Judge(**judge_config)

    async def judge(prompts, completions, **columns):
        return await grader.reward(prompts, completions, **columns)

    judge.grader = grader
    return judge


def reward_functions(names: list[str], judge_config: dict[str, Any]):
    funcs = []
    for name in names:
        if name == "judge":
            funcs.append(judge_reward(judge_config))
        elif name in REWARDS:
            funcs.append(REWARDS[name])
        else:
            raise ValueError(f"unknown reward {name!r}; known: "
                             f"{', '.join(sorted([*REWARDS, 'judge']))}")
    return funcs
