"""Length in tokens of built rows, with the model's tokenizer when the recipe names one.

With a tokenizer (a local folder, loaded with transformers' AutoTokenizer), conversations are
counted through its chat template when it has one, exactly as the trainer will see them.
Without one, the count is an estimate: words for Latin script, one per CJK character
(meddata.text.tokens), documented as such in the manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from meddata.text import tokens

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "special_tokens_map.json", "tokenizer.model", "chat_template.jinja")


def tokenizer_hash(path: str) -> str | None:
    folder = Path(path)
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = folder / name
        if f.exists():
            h.update(name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).exists():
        raise FileNotFoundError(f"tokenizer {path}: no such folder (meddata loads tokenizers from "
                                "local folders at build time)")
    return AutoTokenizer.from_pretrained(path)


class Measure:
    def __init__(self, tokenizer_path: str | None = None):
        self.path = tokenizer_path
        self.tok = load_tokenizer(tokenizer_path) if tokenizer_path else None

    def describe(self) -> dict[str, Any]:
        if self.tok is None:
            return {"counter": "estimate (words + CJK characters)"}
        return {"counter": "tokenizer", "tokenizer": self.path,
                "tokenizer_sha256": tokenizer_hash(self.path),
                "chat_template": bool(getattr(self.tok, "chat_template", None))}

    def text(self, text: str) -> int:
        if self.tok is None:
            return len(tokens(text))
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def messages(self, msgs: list[dict[str, str]]) -> int:
        if self.tok is not None and getattr(self.tok, "chat_template", None):
            enc = self.tok.apply_chat_template(msgs, tokenize=True, return_dict=True)
            return len(enc["input_ids"])
        return self.text("\n".join(m["content"] for m in msgs))

    def row(self, kind: str, row: dict[str, Any]) -> int:
        if kind == "sft":
            return self.messages(row["messages"])
        if kind == "preference":
            return max(self.messages(row["prompt"] + row["chosen"]),
                       self.messages(row["prompt"] + row["rejected"]))
        if kind == "kto":
            return self.messages(row["prompt"] + row["completion"])
        if kind == "prompts":
            return self.messages(row["prompt"])
        return self.text(row["text"])
