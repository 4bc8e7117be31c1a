"""The one encoder of text into a model's token ids, with a fast backend checked against the
`tokenizers` library before it is trusted.

    auto   fastokens when it loads the tokenizer and gives the same ids on every probe (the
           default; otherwise `hf`, and the reason is one line in the manifest)
    fast   fastokens, or an error saying why it cannot be used
    hf     the `tokenizers` library (the Rust core behind transformers' fast tokenizers)

The backend is chosen by `--tokenizer-backend`, else the recipe's `tokenizer_backend`, else
the environment variable MEDDATA_TOKENIZER_BACKEND, else `auto`. It never changes a token id,
so it never changes a version id: the ids of both backends are compared

- before use, on a probe set built for what breaks re-implementations of BPE: Chinese,
  Japanese, Korean, Thai and Arabic, emoji (ZWJ sequences, flags, skin tones, variation
  selectors) and rare Unicode (plane-2 CJK, private use, controls, combining marks), long
  runs of digits and of whitespace, code, every added and special token of the tokenizer in
  context, text that its normalizer changes (NFC/NFD/NFKC pairs, full-width forms, case), and
  strings aimed at each branch of the pre-tokenizer regexes (contractions, a letter run after
  punctuation, `\\s+(?!\\S)`, newlines after punctuation), one by one and joined in one text;
- while building, on every 1,000th row the fast backend encodes: a difference stops the
  build with the row and the first differing token.

fastokens (PyPI, Apache-2.0; vLLM ships it as a tokenizer mode) loads the very
`tokenizer.json` the `tokenizers` library runs: meddata hands it the loaded tokenizer's own
serialization (after transformers has configured it), so the two read the same normalizer,
pre-tokenizer, model and added tokens. Its `encode_batch_flat` returns a batch's ids as one
buffer with offsets, with no Python object per token.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

BACKENDS = ("auto", "fast", "hf")
ENV = "MEDDATA_TOKENIZER_BACKEND"
SAMPLE_EVERY = 1000  # rows between two sampled comparisons while building


class BackendError(ValueError):
    """`fast` asked for but not usable, or an unknown backend name."""


class TokenizerMismatch(RuntimeError):
    """The fast backend gave other ids than the `tokenizers` library on a row of the build."""


def requested(backend: str | None) -> str:
    """The backend asked for: the argument, else MEDDATA_TOKENIZER_BACKEND, else auto."""
    name = backend or os.environ.get(ENV) or "auto"
    if name not in BACKENDS:
        where = "--tokenizer-backend" if backend else ENV
        raise BackendError(f"{where}: unknown tokenizer backend {name!r}; use one of "
                           f"{', '.join(BACKENDS)}")
    return name


# --- the probe set -------------------------------------------------------------------------

PROBES: dict[str, str] = {
    "english": "The patient's BP was 140/90 mmHg; he'd been taking 5 mg amlodipine. "
               "I'm sure they're fine, we've seen it, you'll see, it's OK, don't, I'd, "
               "IT'S, WE'VE, THEY'RE.",
    "chinese": "患者，男，45岁。主诉：反复胸痛3年，加重1周。高血压病史10年，口服氨氯地平5mg。"
               "气血两虚，面色苍白、头晕目眩。【诊断】冠心病？",
    "japanese": "患者は高血圧の既往があり、アムロジピンを服用中です。カタカナ、ひらがな、"
                "ｶﾀｶﾅ（半角）も。東京都。",
    "korean_thai_arabic": "고혈압 환자입니다. ผู้ป่วยความดันโลหิตสูง مريض ارتفاع ضغط الدم "
                          "हृदय रोग Ελληνικά Кириллица",
    "emoji": "fever 🤒🤒 👩‍⚕️ 👨‍👩‍👧‍👦 🇨🇳🇺🇸 👍🏽 ❤️ ✔︎ 🫀🫁 ☕",
    "rare_unicode": "𠀀𠀁𪚥 \ue000\uf8ff \U000f0000 a\u0301 \u200b\u200c\u200d\ufeff "
                    "\u2028\u2029 \u0085 \x00\x01\x7f \ufffd µ Å Ω ℃ № ™ ½ ² ﬁ",
    "normalizer_pairs": "café cafe\u0301 Å A\u030a Ω Ω ｆｕｌｌ－ｗｉｄｔｈ１２３ "
                        "ＡＢＣ MiXeD CaSe İstanbul ß ẞ ǅ",
    "digits": "0 12 345 6789 " + "1234567890" * 30 + " 3.14159 1,000,000 1e-10 0x1F",
    "whitespace": "a" + " " * 300 + "b\t\t\tc\n\n\n\nd \n \n e\r\nf" + "\t" * 64 + "g   ",
    "whitespace_edges": "   leading and trailing   ",
    "newlines_after_punct": "end.\n\nNext:\n- item;\n\n\n\r\n(a)\n",
    "code": "def f(x: int) -> int:\n    return x ** 2  # square\n\n"
            "for (int i = 0; i < n; ++i) { a[i] += b[i]; }\n"
            '{"key": [1, 2.5, null, true], "k2": "v\\n"}\n'
            "<div class=\"x\">&amp; &lt;tag&gt;</div>\n"
            "SELECT * FROM t WHERE id IN (1,2,3);\n"
            "https://pubmed.ncbi.nlm.nih.gov/12345678/?q=a+b&x=1#frag",
    "punctuation_runs": "!!! ??? ... --- === *** ### @@@ ~~~ ``` ''' \"\"\" ,,, ;;; ::: ///",
    "long_word": "pneumonoultramicroscopicsilicovolcanoconiosis" * 8,
    "mixed": "MedMCQA题目：Which drug 治疗 absence seizures？答案：Ethosuximide (乙琥胺) 250mg×2。",
    "think": "<think>\nLet us reason step by step.\n</think>\n\nThe answer is A.",
    "empty": "",
}


def probes(hf) -> dict[str, str]:
    """The probe set for one tokenizer: the fixed probes, every added and special token of
    the tokenizer in context (at the start, between letters, between spaces, repeated), and
    everything joined in one text."""
    out = dict(PROBES)
    added = [t.content for t in hf.get_added_tokens_decoder().values()] if hasattr(
        hf, "get_added_tokens_decoder") else []
    for i, token in enumerate(added):
        out[f"added_token_{i}"] = (f"{token}x {token} a{token}b  {token}  {token}{token}\n"
                                   f"{token}")
    out["all_joined"] = " ".join(out.values())
    return out


# --- the encoder ---------------------------------------------------------------------------

def _flat(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    values = np.fromiter((i for x in lists for i in x), np.int32, count=int(offsets[-1]))
    return values, offsets


def _first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


class Encoder:
    """Token ids of texts (no special tokens added), in batches, with the chosen backend.

    `tok` is a transformers tokenizer; its `backend_tokenizer` (a `tokenizers.Tokenizer`)
    is the `hf` backend and the reference the fast backend is checked against."""

    def __init__(self, tok, backend: str | None = None):
        self.tok = tok
        self.hf = getattr(tok, "backend_tokenizer", None)
        self.requested = requested(backend)
        self.fast = None
        self.library: str | None = None
        self.reason = ""
        self.rows = 0          # rows encoded by this encoder (the sample's clock)
        self.sampled = 0       # rows compared with the `tokenizers` library
        if self.requested == "hf":
            self.reason = "asked for (--tokenizer-backend hf)"
        else:
            self.fast, self.reason = self._load_fast()
            if self.fast is None and self.requested == "fast":
                raise BackendError(f"--tokenizer-backend fast: {self.reason}; use "
                                   "--tokenizer-backend hf (or auto)")

    @property
    def backend(self) -> str:
        return "fast" if self.fast is not None else "hf"

    def _load_fast(self):
        """(the fastokens tokenizer, why) after the probe set, or (None, why not)."""
        if self.hf is None:
            return None, "a Python (slow) tokenizer has no tokenizer.json for fastokens"
        try:
            import fastokens
        except ImportError:
            return None, "fastokens is not installed (pip install fastokens)"
        from importlib.metadata import version

        self.library = f"fastokens {version('fastokens')}"
        try:
            fast = fastokens.Tokenizer.from_json_str(self.hf.to_str())
        except Exception as e:  # noqa: BLE001  (any refusal means: use hf)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return None, f"fastokens cannot load this tokenizer ({first[:200]})"
        texts = probes(self.hf)
        names, values = list(texts), list(texts.values())
        want = [e.ids for e in self.hf.encode_batch(values, add_special_tokens=False)]
        try:
            got = [e.ids for e in fast.encode_batch(values, add_special_tokens=False)]
            flat, offsets = self._fast_flat(fast, values)
        except Exception as e:  # noqa: BLE001
            return None, f"fastokens failed on the probe set ({type(e).__name__}: {e})"[:300]
        for name, w, g in zip(names, want, got):
            if w != g:
                i = _first_difference(w, g)
                return None, (f"fastokens differs from tokenizers on the probe {name!r} at "
                              f"token {i} ({w[i:i + 3]} vs {g[i:i + 3]})")
        if flat.tolist() != [i for w in want for i in w] or \
                np.diff(offsets).tolist() != [len(w) for w in want]:
            return None, "fastokens' flat batch differs from its own encode_batch"
        return fast, f"{len(texts)} probes identical to tokenizers"

    @staticmethod
    def _fast_flat(fast, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, offsets = fast.encode_batch_flat(texts, add_special_tokens=False)
        return (np.frombuffer(ids, np.uint32).astype(np.int32),
                np.frombuffer(offsets, np.uint64).astype(np.int64))

    def encode_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(every text's ids concatenated as int32, offsets: len(texts) + 1 int64)."""
        if self.fast is None:
            return _flat(self.encode(texts))
        values, offsets = self._fast_flat(self.fast, texts)
        self._check_sample(texts, values, offsets)
        return values, offsets

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids (a list per text)."""
        if self.fast is not None:
            values, offsets = self.encode_flat(texts)
            return [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))]
        self.rows += len(texts)
        if self.hf is None:  # a slow (Python) tokenizer
            return self.tok(texts, add_special_tokens=False)["input_ids"]
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def _check_sample(self, texts: list[str], values: np.ndarray, offsets: np.ndarray) -> None:
        """Every SAMPLE_EVERY-th row (counted over this encoder's life) encoded again with
        the `tokenizers` library; any difference stops the build."""
        start = self.rows
        self.rows += len(texts)
        first = -start % SAMPLE_EVERY
        picks = list(range(first, len(texts), SAMPLE_EVERY))
        if not picks:
            return
        want = self.hf.encode_batch([texts[i] for i in picks], add_special_tokens=False)
        for i, w in zip(picks, want):
            got = values[offsets[i]:offsets[i + 1]].tolist()
            if got != w.ids:
                k = _first_difference(w.ids, got)
                raise TokenizerMismatch(
                    f"row {start + i} of this build ({texts[i][:60]!r}...): fastokens and "
                    f"tokenizers differ at token {k} ({w.ids[k:k + 3]} vs {got[k:k + 3]}); "
                    "rebuild with --tokenizer-backend hf")
        self.sampled += len(picks)

    def describe(self) -> dict[str, Any]:
        out = {"backend": self.backend, "requested": self.requested, "reason": self.reason}
        if self.library and self.fast is not None:
            out["library"] = self.library
        if self.fast is not None:
            out.update(sampled_every=SAMPLE_EVERY, sampled_rows=self.sampled)
        return out

    def line(self) -> str:
        """The choice in one line, for the build's output."""
        name = self.library if self.fast is not None else "tokenizers"
        return f"tokenizer backend: {self.backend} ({name}): {self.reason}"

    # a fastokens tokenizer does not pickle: Ray workers rebuild it (and probe again)
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["fast"] = None
        state["_had_fast"] = self.fast is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        had = state.pop("_had_fast", False)
        self.__dict__.update(state)
        if had:
            self.fast, reason = self._load_fast()
            if self.fast is None:
                raise BackendError(f"a worker could not rebuild the fast tokenizer backend the "
                                   f"driver chose ({reason}); use --tokenizer-backend hf")
