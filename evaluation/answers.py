"""Reading a model's answer out of its text: shared by the rewards, the LLM judge and
evaluation (none of them imports another for it).

Only the text after the last `</think>` counts. Patterns cover English ("the answer is C",
"Answer: (C)", "correct option is C") and Chinese (答案是C, 答案：C, 选C), yes/no/maybe
(是/否/不确定), and several letters for questions with more than one correct option
("the answer is A, C and D", 答案是ACD, 答案：A、C、D).
"""

from __future__ import annotations

import re
from typing import Any

_THINK_END = re.compile(r"</think>", re.I)
# several letters: case-sensitive, so "the answer is a diuretic" is not option A
_RUN = r"[A-J](?:\s*(?:,|，|、|;|；|/|&|and|和|及|与)?\s*[A-J])+"
# each level: the patterns for several letters, then the single-letter one (the old
# behaviour, case-insensitive in English); the first level with a match wins, and within it
# the match that starts last
_LETTER_LEVELS = [
    [re.compile(rf"(?:answer|option|choice)s?\s*(?:is|are|:)?\s*(?:options?\s*)?[\(\[]?\s*"
                rf"({_RUN})(?![A-Za-z])"),
     re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*(?:option\s*)?[\(\[]?\s*([A-J])\b"
                r"(?![a-z])", re.I)],
    [re.compile(rf"答案\s*(?:是|为|应为|应该是)?\s*[:：]?\s*[\(（]?\s*({_RUN})"),
     re.compile(r"答案\s*(?:是|为|应为|应该是)?\s*[:：]?\s*[\(（]?\s*([A-J])")],
    [re.compile(rf"(?:选|选择)\s*[\(（]?\s*({_RUN})"),
     re.compile(r"(?:选|选择)\s*[\(（]?\s*([A-J])")],
    [re.compile(rf"^\s*[\(\[]?({_RUN})[\)\].:：]?\s*$", re.M),
     re.compile(r"^\s*[\(\[]?([A-J])[\)\].:：]?\s*$", re.M)],
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


def extract_letters(text: str, labels: str = "ABCDEFGHIJ") -> str | None:
    """The option letters a completion commits to, sorted ("C", or "ACD" for several), from
    the last match after </think>; None when it commits to none of `labels`."""
    body = after_think(text)
    for level in _LETTER_LEVELS:
        found = []
        for pattern in level:
            for m in pattern.finditer(body):
                group = m.group(1)  # a single letter (any case), or a run of capitals
                letters = {c for c in re.findall(r"[A-J]", group.upper() if len(group) == 1
                                                 else group) if c in labels}
                if letters:
                    found.append((m.start(1), "".join(sorted(letters))))
        if found:
            return max(found, key=lambda f: (f[0], len(f[1])))[1]
    return None


def extract_letter(text: str, labels: str = "ABCDEFGHIJ") -> str | None:
    """The single option letter a completion commits to (None for none, or several)."""
    letters = extract_letters(text, labels)
    return letters if letters and len(letters) == 1 else None


def extract_decision(text: str) -> str | None:
    body = after_think(text)
    for pattern in _DECISION_PATTERNS:
        found = [m.group(1).lower() for m in pattern.finditer(body)]
        if found:
            return _ZH_DECISION.get(found[-1], found[-1])
    return None
