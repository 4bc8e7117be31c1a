"""Multiple-choice helpers shared by the MCQ converters: options and answers in every layout.

Options arrive as an object {"A": text, ...}, a list of {"key", "value"} (or {"label",
"text"}) objects, a list of strings (optionally prefixed "A. ", "(B)", "C)"), separate
fields opa, opb, ..., or a string holding any of those as JSON or as a Python literal
(HuatuoGPT-o1's demo data). Labels come out as A, B, C, ... in order. Answers arrive as a
letter, a 0- or 1-based index, or the option's text; text is matched after normalization.
Questions with several correct options keep the whole set: `answer_label` holds the
letters, sorted ("ACD"), and `answer` the options' texts joined by "; " (`resolve_set`).
"""

from __future__ import annotations

import ast
import json
import re
import string
import unicodedata
from typing import Any

from meddata.convert import Reject
from meddata.text import clean, normalize_key

LETTERS = string.ascii_uppercase
_PREFIX = re.compile(r"^\s*[\(\[]?([A-Za-z])[\)\]]?\s*[.:：、)\]]\s*|^\s*\(([A-Za-z])\)\s*")
_LETTER = re.compile(r"^\s*[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*[.:：、]?\s*$")
_OP_FIELDS = [f"op{c}" for c in "abcdefghij"]


def _options_value(value: Any) -> list[tuple[str | None, Any]]:
    """(original key or None, text) pairs from any options value."""
    if isinstance(value, str):
        text = value.strip()
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, (dict, list)):
                return _options_value(parsed)
        raise Reject("bad_options", f"options string is neither JSON nor a literal: {text[:80]!r}")
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):
        pairs: list[tuple[str | None, Any]] = []
        for item in value:
            if isinstance(item, dict):
                key = item.get("key", item.get("label"))
                text = item.get("value", item.get("text"))
                pairs.append((None if key is None else str(key), text))
            else:
                pairs.append((None, item))
        return pairs
    raise Reject("bad_options", f"options are {type(value).__name__}")


def parse_options(record: dict[str, Any], field: str = "options") -> list[dict[str, str]]:
    if record.get(field) is not None:
        pairs = _options_value(record[field])
    elif any(f in record for f in _OP_FIELDS):
        pairs = [(f[2].upper(), record[f]) for f in _OP_FIELDS if f in record]
    else:
        raise Reject("missing_field:options", "no options, choices or opa..opd fields")
    texts = []
    for key, text in pairs:
        if isinstance(text, (dict, list)):
            raise Reject("bad_options", f"option {key or len(texts) + 1} is not text")
        value = clean(text)
        if value is None:
            raise Reject("empty_option", f"option {key or len(texts) + 1} is empty")
        texts.append((key, value))
    if len(texts) < 2:
        raise Reject("too_few_options", f"{len(texts)} option(s)")
    if len(texts) > len(LETTERS):
        raise Reject("bad_options", f"{len(texts)} options")
    keys = [k for k, _ in texts]
    if all(k is None for k in keys):
        # list of strings: strip "A. " prefixes when they run A, B, C... in order
        found = [_PREFIX.match(t) for _, t in texts]
        if all(found) and [(m.group(1) or m.group(2)).upper() for m in found] == list(
                LETTERS[:len(texts)]):
            texts = [(None, t[m.end():].strip() or t) for (_, t), m in zip(texts, found)]
    elif all(k is not None and len(k.strip()) == 1 and k.strip().isalpha() for k in keys):
        ordered = sorted(texts, key=lambda kt: kt[0].strip().upper())
        if [k.strip().upper() for k, _ in ordered] != list(LETTERS[:len(texts)]):
            raise Reject("bad_options", f"option labels {keys} are not A.. contiguous")
        texts = ordered
    return [{"label": LETTERS[i], "text": t} for i, (_, t) in enumerate(texts)]


def letter_of(value: Any, options: list[dict[str, str]]) -> str | None:
    """A valid option letter from 'C', ' c. ', '(C)'; None when `value` is not a letter."""
    if not isinstance(value, str):
        return None
    m = _LETTER.match(value)
    if not m:
        return None
    letter = m.group(1).upper()
    if letter not in [o["label"] for o in options]:
        raise Reject("answer_not_in_options", f"answer letter {letter} with {len(options)} options")
    return letter


def _soft_key(text: str) -> str:
    """NFKC, case-fold and collapsed whitespace; punctuation and symbols kept."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).rstrip(".。")


def match_text(text: str, options: list[dict[str, str]]) -> str | None:
    """The one option whose text equals `text`: first with symbols kept ("LOD > 3" is not
    "LOD < 3"), then with punctuation and symbols removed too."""
    for key_fn in (_soft_key, normalize_key):
        key = key_fn(text)
        hits = [o["label"] for o in options if key and key_fn(o["text"]) == key]
        if len(hits) == 1:
            return hits[0]
    return None


def _same_text(text: str, options: list[dict[str, str]], label: str) -> bool:
    """Whether the option `label`'s text equals `text` (as `match_text` compares)."""
    option = next(o["text"] for o in options if o["label"] == label)
    return any(key_fn(text) and key_fn(text) == key_fn(option)
               for key_fn in (_soft_key, normalize_key))


def index_value(value: Any) -> int | None:
    """An int from 2, 2.0 or "2"; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


UNANSWERED = -1  # the index that marks an unanswered item (MedMCQA's test split)
BAD_INDEX = "answer index {} is negative (only -1 means unanswered)"


def answer_index(value: Any) -> int | None:
    """An answer index from 2, 2.0 or "2": None for no value or for text (a letter or an
    option's text, resolved elsewhere); UNANSWERED (-1) for an unanswered item. Anything
    else is a reject: another negative number (bad_answer_index), or a boolean, list or
    object (wrong_type). Out-of-range indices are rejected by answer_from_index."""
    if isinstance(value, (bool, list, dict)):
        raise Reject("wrong_type", f"answer index is {json.dumps(value)[:40]}, expected an "
                                   "integer")
    index = index_value(value)
    if index is not None and index < UNANSWERED:
        raise Reject("bad_answer_index", BAD_INDEX.format(index))
    return index


def answer_from_index(index: int, base: int, options: list[dict[str, str]]) -> str:
    pos = index - base
    if not 0 <= pos < len(options):
        raise Reject("answer_not_in_options",
                     f"answer index {index} ({base}-based) with {len(options)} options")
    return options[pos]["label"]


def option_text(label: str | None, options: list[dict[str, str]]) -> str | None:
    """The text of the labelled option; for several labels ("ACD"), their texts joined by
    "; " in label order."""
    if label and len(label) > 1:
        return "; ".join(o["text"] for o in options if o["label"] in label)
    return next((o["text"] for o in options if o["label"] == label), None)


_LETTER_SET = re.compile(r"^[\s,，、;；/]*([A-Za-z](?:[\s,，、;；/]*[A-Za-z])*)[\s,，、;；/.。]*$")


def resolve_set(options: list[dict[str, str]], value: Any) -> str | None:
    """The set of correct labels of a question with one or more correct options, from "B",
    "ACD", "A,C,D", "A、C、D" or a list ["A", "C", "D"]: sorted, unique letters ("ACD");
    None for no answer. Letters run together must be capitals ("ABD"; "Bad" or "abd" is a
    word, bad_answer); every letter must be an option's (else answer_not_in_options)."""
    if isinstance(value, list):  # ["A", "C"]: a list of option letters
        if not value:
            return None
        if not all(isinstance(v, str) and _LETTER.match(v) for v in value):
            raise Reject("wrong_type", f"answer {json.dumps(value, ensure_ascii=False)[:40]} "
                                       "is not a list of option letters")
        value = ",".join(v.strip() for v in value)
    elif isinstance(value, (dict, bool)):
        raise Reject("wrong_type", f"answer is {type(value).__name__}, expected letters")
    text = clean(value)
    if text is None:
        return None
    m = _LETTER_SET.match(text)
    if not m:
        raise Reject("bad_answer", f"answer {text[:40]!r} is not option letters")
    run = "".join(c for c in m.group(1) if c.isalpha())
    if len(run) > 1 and not (run.isupper() or run.islower()) or len(run) > 1 and \
            run.islower() and re.fullmatch(r"[A-Za-z]+", m.group(1)):
        # "Bad", "abd": a word, not letters (letters run together are capitals: "ABD")
        raise Reject("bad_answer", f"answer {text[:40]!r} is a word, not option letters")
    letters = sorted({c.upper() for c in run})
    labels = {o["label"] for o in options}
    missing = [c for c in letters if c not in labels]
    if missing:
        raise Reject("answer_not_in_options",
                     f"answer letter(s) {''.join(missing)} with {len(options)} options")
    return "".join(letters)


def resolve(options: list[dict[str, str]], letter: Any = None, text: Any = None) -> str | None:
    """The answer label from a letter and/or a text answer; both given must agree."""
    letter, text = clean(letter), clean(text)
    by_letter = None
    if letter is not None:
        if _LETTER.match(letter):
            by_letter = letter_of(letter, options)
        elif text is None:
            text = letter  # a text answer in the letter field
        else:
            raise Reject("bad_answer", f"answer letter field holds {letter[:40]!r}")
    by_text = None
    if text is not None:
        by_text = match_text(text, options)
        if by_text is None and by_letter and _same_text(text, options, by_letter):
            return by_letter  # two options share this text; the letter says which one
        if by_text is None and _LETTER.match(text):
            by_text = letter_of(text, options)
        if by_text is None:
            if by_letter:
                raise Reject("answer_mismatch",
                             f"answer letter {by_letter} but answer text {text[:60]!r} "
                             "matches no option")
            raise Reject("answer_not_in_options", f"answer text {text[:80]!r} matches no option")
    if by_letter and by_text and by_letter != by_text:
        raise Reject("answer_mismatch",
                     f"answer letter {by_letter} but answer text matches option {by_text}")
    return by_letter or by_text


def mcq_row(source_id: str | None, question: str, options: list[dict[str, str]],
            label: str | None, rationale: str | None = None, response: str | None = None,
            meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A canonical MCQ row; the answer text is the labelled option's (the options' texts,
    joined by "; ", when `label` holds several letters)."""
    return {"source_id": source_id, "task": "mcq", "question": question, "options": options,
            "answer_label": label, "answer": option_text(label, options),
            "rationale": rationale, "response": response, "meta": meta or {}}
