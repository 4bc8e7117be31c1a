"""Length in tokens of built rows, batch by batch, with the model's tokenizer when the recipe
names one.

With a tokenizer (a local folder, loaded with transformers' AutoTokenizer), conversations
are rendered through its chat template when it has one, exactly as the trainer will see
them, and a whole batch is tokenized in one call of meddata.encoder, the one place text
becomes token ids (a fast backend checked against the `tokenizers` library, or that library
itself; the backend never changes an id). Without one, the count is an estimate: words for
Latin script and one per CJK character (meddata.text's tokenizer, computed in polars),
documented as such in the manifest.

Token ids for packing are cached in the store (`.cache/tokens/<tokenizer>/`), one file per
batch keyed by the sha256 of its texts, so a rebuild that changes only later steps
(packing length, the validation split) does not tokenize again.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from meddata.text import TOKEN_PATTERN

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


def _contents(conversations: pl.Series) -> pl.Series:
    return conversations.list.eval(pl.element().struct.field("content")).list.join("\n")


def joined(*conversations: pl.Series) -> pl.Series:
    """Conversations (list<struct<role, content>> Series) concatenated row by row."""
    frame = pl.DataFrame({f"c{i}": c for i, c in enumerate(conversations)})
    return frame.select(pl.concat_list(frame.columns)).to_series()


def estimate(texts: pl.Series) -> np.ndarray:
    """Words plus CJK characters of each text (the estimate without a tokenizer): the
    tokens of meddata.text's tokenizer, counted on the text as it is (normalizing first
    would change the count only for rare characters, at several times the cost)."""
    return texts.str.count_matches(TOKEN_PATTERN).fill_null(0).to_numpy().astype(np.int64)


class Measure:
    """Token counts (and ids) with the recipe's tokenizer, or the estimate without one.

    The tokenizer is loaded where it is first used: in each worker that measures rows, and
    on the driver only when the driver measures rows itself (the local engine). A Ray run's
    driver never loads it (transformers imports PyTorch: seconds of CPU the driver does not
    need); its manifest describes the tokenizer as the workers found it (`absorb`)."""

    def __init__(self, tokenizer_path: str | None = None, cache_dir: Path | None = None,
                 backend: str | None = None):
        from meddata.encoder import requested

        requested(backend)  # an unknown name fails here, with or without a tokenizer
        if tokenizer_path and not Path(tokenizer_path).is_dir():
            raise FileNotFoundError(f"tokenizer {tokenizer_path}: no such folder (meddata "
                                    "loads tokenizers from local folders at build time)")
        self.path, self.backend = tokenizer_path, backend
        self._tok = self._encoder = None
        self.sha256 = tokenizer_hash(tokenizer_path) if tokenizer_path else None
        self.cache_dir = cache_dir / self.sha256[:16] if cache_dir and self.sha256 else None
        self.cache_hits = self.cache_misses = 0
        self.found: dict[str, Any] | None = None  # a worker's description (absorb)
        self.sampled_elsewhere = 0  # rows the workers' encoders compared (absorb)

    @property
    def has_tokenizer(self) -> bool:
        return self.path is not None or self._tok is not None

    @property
    def tok(self):
        """The tokenizer (loaded on first use, checked against the files the build started
        with), or None without one."""
        if self._tok is None and self.path is not None:
            self._tok = load_tokenizer(self.path)
            if self.sha256 is not None and tokenizer_hash(self.path) != self.sha256:
                raise RuntimeError(f"tokenizer {self.path} differs on this worker from the one "
                                   "the build started with (its files' sha256): give every "
                                   "node the same tokenizer folder")
        return self._tok

    @property
    def encoder(self):
        if self._encoder is None and self.tok is not None:
            from meddata.encoder import Encoder

            self._encoder = Encoder(self.tok, self.backend)
        return self._encoder

    def __getstate__(self) -> dict[str, Any]:
        """Shipped to a worker without the tokenizer: a Measure over a tokenizer folder
        loads it again where it runs (per-worker state, never sent from the driver); one
        made `with_tokenizer` (no folder) travels whole."""
        state = dict(self.__dict__)
        if self.path is not None and self.sha256 is not None:
            state["_tok"] = state["_encoder"] = None
        return state

    def absorb(self, hits: int, misses: int, sampled: int,
               described: dict[str, Any] | None) -> None:
        """Add what a worker's copy counted: cache hits and misses, rows its encoder
        compared with `tokenizers`, and how it described the tokenizer."""
        self.cache_hits += hits
        self.cache_misses += misses
        if self._encoder is not None:
            self._encoder.sampled += sampled
        else:
            self.sampled_elsewhere += sampled
        if self.found is None and described is not None:
            self.found = described

    @classmethod
    def with_tokenizer(cls, tokenizer, backend: str | None = None) -> Measure:
        """A Measure over a tokenizer already loaded (a model's, at training time)."""
        from meddata.encoder import Encoder

        measure = cls(backend=backend)
        measure._tok = tokenizer
        measure._encoder = Encoder(tokenizer, backend)
        measure.path = getattr(tokenizer, "name_or_path", None)
        return measure

    def describe(self) -> dict[str, Any]:
        if not self.has_tokenizer:
            return {"counter": "estimate (words + CJK characters)"}
        if self._tok is None and self.found is not None:  # as the workers found it
            out = {**self.found, "encoder": dict(self.found["encoder"])}
            if "sampled_rows" in out["encoder"]:
                out["encoder"]["sampled_rows"] = self.sampled_elsewhere
            return out
        return {"counter": "tokenizer", "tokenizer": self.path, "tokenizer_sha256": self.sha256,
                "chat_template": bool(getattr(self.tok, "chat_template", None)),
                "encoder": self.encoder.describe()}

    def texts(self, texts: pl.Series) -> np.ndarray:
        if self.tok is None:
            return estimate(texts)
        _, offsets = self.encoder.encode_flat(texts.fill_null("").to_list())
        return np.diff(offsets)

    def conversations(self, conversations: pl.Series) -> np.ndarray:
        """Tokens of each conversation (a list<struct<role, content>> Series) as the
        model's chat template renders it."""
        if self.tok is None or not getattr(self.tok, "chat_template", None):
            return self.texts(_contents(conversations))
        rendered = self.tok.apply_chat_template(conversations.to_list(), tokenize=False)
        return np.diff(self.encoder.encode_flat(rendered)[1])

    def ids(self, texts: pl.Series) -> pa.Array:
        """The token ids of each text (list<int32>), from the cache when this tokenizer has
        seen the same batch of texts before."""
        values = texts.fill_null("").to_list()
        path = None
        if self.cache_dir is not None:
            h = hashlib.sha256()
            for t in values:
                b = t.encode("utf-8")
                h.update(len(b).to_bytes(8, "little"))
                h.update(b)
            path = self.cache_dir / f"{h.hexdigest()[:40]}.arrow"
            if path.exists():
                try:
                    with pa.OSFile(str(path)) as src:
                        self.cache_hits += 1
                        return pa.ipc.open_file(src).read_all().column("ids").combine_chunks()
                except (OSError, pa.ArrowInvalid):
                    pass  # a damaged cache file: tokenize again
        self.cache_misses += 1
        flat, offsets = self.encoder.encode_flat(values)
        array = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")
            with pa.ipc.new_file(tmp, pa.schema([("ids", array.type)])) as w:
                w.write_table(pa.table({"ids": array}))
            os.replace(tmp, path)
        return array
