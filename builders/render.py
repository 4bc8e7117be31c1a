"""Prompt and answer rendering, in the language of the row.

- MCQ: its context when it has one, the question, then an options block ("A. ..."), then
  (style `instruct`) a line asking for the letter; the answer states the letter and the
  option text, then the explanation where the source has one.
- yes/no (PubMedQA): the context, then the question; the answer states yes/no/maybe, then
  the long answer.
- instruction: the instruction, then its input; open QA and reasoning: the question, after
  its context where the row has one (a clinical case's description).
- dialogue (multi-turn rows): the conversation itself, turn by turn (`dialogue`); the
  reference answer is its last assistant turn.
- MCQ with several correct options: the answer names every letter and text.
- reasoning: `think` puts the rationale in a <think>...</think> block before the answer,
  `inline` writes it out (before the response for reasoning rows, after the answer line for
  MCQ and yes/no), `none` leaves it out.
All functions are pure: a canonical row (dict) in, text out.
"""

from __future__ import annotations

from typing import Any

REASONING = ("think", "inline", "none")
STYLES = ("instruct", "plain")

TEXT = {
    "en": {
        "options": "Options:",
        "mcq_ask": "Answer with the letter of the correct option, then explain.",
        "yes_no_ask": "Answer yes, no or maybe, then explain.",
        "context": "Context:",
        "question": "Question:",
        "input": "Input:",
        "answer_is": "The answer is {label}. {text}",
        "decision_is": "The answer is {answer}.",
        "stop": ".",
        "letter_sep": ", ",
        "text_sep": "; ",
    },
    "zh": {
        "options": "选项：",
        "mcq_ask": "请给出正确选项的字母，并说明理由。",
        "yes_no_ask": "请回答是（yes）、否（no）或不确定（maybe），并说明理由。",
        "context": "背景：",
        "question": "问题：",
        "input": "输入：",
        "answer_is": "答案是{label}。{text}",
        "decision_is": "答案是{answer}。",
        "stop": "。",
        "letter_sep": "、",
        "text_sep": "；",
    },
}


def words(row: dict[str, Any]) -> dict[str, str]:
    return TEXT.get(row.get("lang") or "en", TEXT["en"])


def options_block(options: list[dict[str, str]]) -> str:
    return "\n".join(f"{o['label']}. {o['text']}" for o in options)


def prompt_text(row: dict[str, Any], style: str = "instruct") -> str:
    w = words(row)
    task, question, context = row["task"], row["question"], row.get("context")
    if task == "mcq":
        parts = [question, f"{w['options']}\n{options_block(row['options'])}"]
        if context:  # e.g. passages retrieved for the question (recipe `retrieve`)
            parts.insert(0, f"{w['context']}\n{context}")
        if style == "instruct":
            parts.append(w["mcq_ask"])
        return "\n\n".join(parts)
    if task == "yes_no":
        parts = [f"{w['context']}\n{context}"] if context else []
        parts.append(f"{w['question']} {question}" if style == "instruct" else question)
        if style == "instruct":
            parts.append(w["yes_no_ask"])
        return "\n\n".join(parts)
    if task == "instruction" and context:
        return f"{question}\n\n{w['input']}\n{context}" if style == "instruct" else \
            f"{question}\n\n{context}"
    if task in ("open_qa", "reasoning") and context:  # e.g. a CMB-Clin case and its question
        return f"{w['context']}\n{context}\n\n{question}"
    if task == "document":
        return row.get("question") or ""
    return question


def with_period(text: str, stop: str) -> str:
    return text if text.endswith((".", "。", "!", "?", "！", "？", ")", "）")) else text + stop


def answer_line(row: dict[str, Any], label: str | None = None, text: str | None = None) -> str:
    """The sentence that commits to an answer (`label`/`text` override the gold one). A
    question with several correct options names every letter ("A, C, D" / "A、C、D") and
    their texts."""
    w = words(row)
    if row["task"] == "mcq":
        label = label or row["answer_label"]
        text = text if text is not None else row["answer"]
        if label and len(label) > 1:
            label = w["letter_sep"].join(label)
            text = w["text_sep"].join((text or "").split("; "))
        return with_period(w["answer_is"].format(label=label, text=text), w["stop"])
    return w["decision_is"].format(answer=text or row["answer"])


def compose(answer: str, rationale: str | None, reasoning: str, after: bool) -> str:
    """Place a rationale around an answer according to the `reasoning` option."""
    if not rationale or reasoning == "none":
        return answer
    if reasoning == "think":
        return f"<think>\n{rationale}\n</think>\n\n{answer}"
    return f"{answer}\n\n{rationale}" if after else f"{rationale}\n\n{answer}"


def chosen_text(row: dict[str, Any], reasoning: str = "inline") -> str | None:
    """The reference answer, or None when the row has none (an unanswered test item)."""
    task = row["task"]
    if task in ("mcq", "yes_no"):
        if not row.get("answer"):
            return None
        line = answer_line(row)
        if row.get("response"):  # e.g. HuatuoGPT-o1 items: a written answer after the letter
            line = f"{line}\n\n{row['response']}"
        return compose(line, row.get("rationale"), reasoning, after=True)
    if task == "document":
        return row.get("context")
    if not row.get("response"):
        return None
    return compose(row["response"], row.get("rationale"), reasoning, after=False)


def messages(prompt: str, answer: str | None = None, system: str | None = None
             ) -> list[dict[str, str]]:
    out = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": prompt})
    if answer is not None:
        out.append({"role": "assistant", "content": answer})
    return out


def dialogue(row: dict[str, Any], system: str | None = None, with_answer: bool = True
             ) -> list[dict[str, str]] | None:
    """A multi-turn row's conversation (its own system turn, or `system`), through its last
    assistant turn, or (with_answer False) up to the last user turn; None for other rows."""
    turns = row.get("turns") or []
    if not turns:
        return None
    turns = [dict(t) for t in turns]
    if turns[0]["role"] != "system" and system:
        turns.insert(0, {"role": "system", "content": system})
    return turns if with_answer else turns[:-1]
