"""Reward functions over the `prompts` columns, for GRPOTrainer / RLOOTrainer.

TRL calls each as f(prompts=, completions=, completion_ids=, trainer_state=, **columns)
where the columns include `answer`, `answer_label`, `options` and `task`; a None score
leaves that row out of this reward. Answer extraction is shared with evaluation.
"""

from __future__ import annotations

import re
from typing import Any

from meddata.text import normalize_key

_THINK_END = re.compile(r"</think>", re.I)
# English: "the answer is C", "Answer: (C)", "correct option is C"; Chinese: 答案是C, 答案：C, 选C
_LETTER_PATTERNS = [
    re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[\(\[]?\s*([A-J])\b"
               r"(?![a-z])", re.I),
    re.compile(r"答案\s*(?:是|为|应为|应该是)?\s*[:：]?\s*[\(（]?\s*([A-J])"),
    re.compile(r"(?:选|选择)\s*[\(（]?\s*([A-J])"),
    re.compile(r"^\s*[\(\[]?([A-J])[\)\].:：]?\s*$", re.M),
]
_DECISION_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)\s*(yes|no|maybe)\b", re.I),
    re.compile(r"答案\s*(?:是|为)?\s*[:：]?\s*(yes|no|maybe|是|否|不确定)", re.I),
    re.compile(r"^\s*(yes|no|maybe)\b", re.I | re.M),
]
_ZH_DECISION = {"是": "yes", "否": "no", "不确定": "maybe"}


def after_think(text: str) -> str:
    """The part of a completion after its last </think> (the whole text when there is none)."""
    parts = _THINK_END.split(text)
    return parts[-1] if len(parts) > 1 else text


def completion_text(completion: Any) -> str:
    """A completion as text: conversational completions are lists of messages."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if m.get("role") == "assistant")
    return str(completion)


def extract_letter(text: str, labels: str = "ABCDEFGHIJ") -> str | None:
    """The option letter a completion commits to (the last match after </think>)."""
    body = after_think(text)
    for pattern in _LETTER_PATTERNS:
        found = [m.group(1).upper() for m in pattern.finditer(body)]
        found = [f for f in found if f in labels]
        if found:
            return found[-1]
    return None


def extract_decision(text: str) -> str | None:
    body = after_think(text)
    for pattern in _DECISION_PATTERNS:
        found = [m.group(1).lower() for m in pattern.finditer(body)]
        if found:
            return _ZH_DECISION.get(found[-1], found[-1])
    return None


def mcq_exact(prompts, completions, answer_label=None, task=None, options=None, **kwargs):
    """1.0 when the extracted letter (MCQ) or decision (yes/no) equals the gold one, else
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
            out.append(1.0 if extract_letter(text, labels) == gold else 0.0)
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
