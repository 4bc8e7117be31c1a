"""`weak_model` rejected responses: a small model answers the prompt; its answer is the
rejected one (the seeds used Qwen2.5-0.5B-Instruct).

- transformers backend: the model's chat template, left padding, prompts sorted by length
  and batched, sampling (temperature > 0) or greedy, stopping at EOS; GPU when present.
  The vLLM backend (`backend: vllm`, the `vllm` extra) generates through `LLM.chat`.
- A generation cache in the store (`<store>/.cache/generations/`), one SQLite file per
  (model, revision, generation settings), keyed by the sha256 of the rendered prompt;
  every batch is committed as soon as it is generated, so a killed build, run again,
  generates only what is missing (and the cache is never held in memory).
- Each worker of a parallel build loads its own model (`setup`) and opens the same cache:
  in WAL mode the workers read while one writes, a writer waits its turn (busy timeout),
  and the first answer stored for a prompt is the one every worker uses (INSERT OR
  IGNORE, then read back), so rows of one prompt agree and a rebuild finds those answers.
- Filters, each a drop reason: `empty_generation`; `unfinished_generation` (hit
  max_new_tokens without EOS, when drop_unfinished); a rejected equal or nearly equal to
  the chosen is dropped by the preference builder as `rejected_near_chosen`.
- Models load from a local folder or, online, from the hub, with trust_remote_code off
  unless the recipe turns it on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meddata.models import resolve_model

from . import render
from .rejected import NoRejected, Strategy

BUSY_SECONDS = 300  # how long a worker waits for another's write to the generation cache


@dataclass
class Generation:
    text: str
    finished: bool
    tokens: int


def settings_of(spec) -> dict[str, Any]:
    return {"max_new_tokens": spec.max_new_tokens, "temperature": spec.temperature,
            "top_p": spec.top_p, "seed": spec.seed, "backend": spec.backend}


class GenerationCache:
    """Generations of one model and settings, persisted batch by batch in SQLite (keyed by
    the sha256 of the rendered prompt): lookups read only the rows asked for, so memory does
    not grow with the cache. A JSON Lines cache of an earlier meddata is imported once."""

    def __init__(self, folder: Path, model: str, revision: str | None, settings: dict):
        import sqlite3

        ident = self.ident(model, revision, settings)
        self.path = self.path_of(folder, model, revision, settings)
        self.namespace = self.path.stem
        folder.mkdir(parents=True, exist_ok=True)
        # several workers may share the file: WAL lets them read while one writes, and a
        # writer waits its turn (busy timeout) instead of failing
        self.db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, "
                        "text TEXT, finished INTEGER, tokens INTEGER)")
        legacy = folder / f"{self.namespace}.jsonl"
        if legacy.exists():
            with contextlib.suppress(FileNotFoundError), open(legacy, encoding="utf-8") as f:
                rows = []
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:  # a line cut by a kill
                        continue
                    rows.append((rec["key"], rec["text"], int(rec["finished"]), rec["tokens"]))
                self.db.executemany("INSERT OR IGNORE INTO generations VALUES (?, ?, ?, ?)",
                                    rows)
                self.db.commit()
                legacy.rename(legacy.with_suffix(".jsonl.imported"))
        header = folder / f"{self.namespace}.json"
        if not header.exists():
            tmp = header.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(ident, encoding="utf-8")
            os.replace(tmp, header)

    @staticmethod
    def ident(model: str, revision: str | None, settings: dict) -> str:
        return json.dumps({"model": model, "revision": revision, **settings}, sort_keys=True)

    @classmethod
    def path_of(cls, folder: Path, model: str, revision: str | None, settings: dict) -> Path:
        """The cache file of a model and its settings."""
        ident = cls.ident(model, revision, settings)
        return folder / f"{hashlib.sha256(ident.encode()).hexdigest()[:20]}.sqlite"

    @staticmethod
    def key(prompt: str) -> str:
        return hashlib.sha256(prompt.encode("utf-8")).hexdigest()

    def get(self, keys: list[str]) -> dict[str, Generation]:
        out: dict[str, Generation] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            marks = ",".join("?" * len(part))
            for key, text, finished, tokens in self.db.execute(
                    f"SELECT key, text, finished, tokens FROM generations WHERE key IN ({marks})",
                    part):
                out[key] = Generation(text, bool(finished), tokens)
        return out

    def add(self, items: dict[str, Generation]) -> dict[str, Generation]:
        """Store `items` (a key another worker stored first keeps its text) and return what
        the cache holds for their keys, so every row of a prompt gets the same answer."""
        self.db.executemany("INSERT OR IGNORE INTO generations VALUES (?, ?, ?, ?)",
                            [(k, g.text, int(g.finished), g.tokens) for k, g in items.items()])
        self.db.commit()  # each batch is durable as soon as it is generated
        return self.get(list(items))


class TransformersBackend:
    def __init__(self, spec):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = resolve_model(spec.model)
        self.spec = spec
        self.device = spec.device if spec.device != "auto" else (
            "cuda" if torch.cuda.is_available() else "cpu")
        if spec.dtype == "auto":
            dtype = torch.bfloat16 if self.device.startswith("cuda") and \
                torch.cuda.is_bf16_supported() else torch.float32
        else:
            dtype = getattr(torch, spec.dtype)
        kwargs = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code,
                  **source.kwargs}
        self.tokenizer = AutoTokenizer.from_pretrained(source.path, **kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, **kwargs)
        self.model.to(self.device).eval()
        self.eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.calls = 0  # prompts sent to the model (the tests count them)

    def render(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def generate(self, prompts: list[str]) -> list[Generation]:
        import torch
        from transformers import set_seed

        spec = self.spec
        self.calls += len(prompts)
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        set_seed(spec.seed + int(hashlib.sha256(prompts[0].encode()).hexdigest()[:8], 16))
        sampling = spec.temperature > 0
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=spec.max_new_tokens, do_sample=sampling,
                temperature=spec.temperature if sampling else None,
                top_p=spec.top_p if sampling else None, top_k=None,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos)
        new = out[:, enc["input_ids"].shape[1]:]
        eos_ids = set(self.eos if isinstance(self.eos, list) else [self.eos])
        results = []
        for row in new.tolist():
            ends = [i for i, t in enumerate(row) if t in eos_ids]
            body = row[:ends[0]] if ends else [t for t in row if t != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(body, skip_special_tokens=True).strip()
            results.append(Generation(text, bool(ends), len(body)))
        return results


class VLLMBackend:
    def __init__(self, spec):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise RuntimeError("backend vllm needs vLLM: pip install 'meddata[vllm]' (a CUDA "
                               "machine), or use backend: transformers") from None
        source = resolve_model(spec.model)
        if source.kwargs.get("gguf_file"):
            path = str(Path(source.path) / source.kwargs["gguf_file"])
        else:
            path = source.path
        self.spec = spec
        self.llm = LLM(model=path, revision=spec.revision, seed=spec.seed,
                       dtype=spec.dtype,
                       trust_remote_code=spec.trust_remote_code)
        self.params = SamplingParams(max_tokens=spec.max_new_tokens,
                                     temperature=spec.temperature, top_p=spec.top_p,
                                     seed=spec.seed)
        self.tokenizer = self.llm.get_tokenizer()
        self.calls = 0

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)

    def generate(self, prompts: list[str]) -> list[Generation]:
        self.calls += len(prompts)
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return [Generation(o.outputs[0].text.strip(), o.outputs[0].finish_reason != "length",
                           len(o.outputs[0].token_ids)) for o in outputs]


BACKENDS = {"transformers": TransformersBackend, "vllm": VLLMBackend}


class WeakModel(Strategy):
    """A small model's answer to each prompt. `setup` loads the model and opens the cache,
    in the process that generates (each worker of a parallel build: the preference
    builder keeps its strategies as per-worker state, never shipped)."""

    name = "weak_model"

    def __init__(self, recipe, store=None, progress: bool = False, backend=None):
        super().__init__(recipe, store=store, progress=progress)
        self.spec = recipe.rejected
        self.backend = backend  # tests may pass one; else built from the recipe
        self.cache: GenerationCache | None = None
        self.totals = {"generated": 0, "from_cache": 0, "new_tokens": 0}

    def setup(self) -> None:
        self._backend()
        self._cache()

    def label(self) -> str:
        return f"weak_model:{self.spec.model}"

    def _backend(self):
        if self.backend is None:
            self.backend = BACKENDS[self.spec.backend](self.spec)
        return self.backend

    def _folder(self) -> Path:
        root = self.store.root if self.store is not None else Path(
            os.environ.get("MEDDATA_STORE", "meddata-store"))
        return root / ".cache" / "generations"

    def _cache(self) -> GenerationCache:
        if self.cache is None:
            self.cache = GenerationCache(self._folder(), self.spec.model, self.spec.revision,
                                         settings_of(self.spec))
        return self.cache

    def rejected(self, rows, chosen):
        from meddata.progress import bar

        spec = self.spec
        backend = self._backend()
        cache = self._cache()
        prompts = [backend.render(render.messages(render.prompt_text(r, self.recipe.prompt_style),
                                                  system=self.recipe.system_prompt))
                   for r in rows]
        keys = [cache.key(p) for p in prompts]
        found = cache.get(keys)
        missing = sorted({k: p for k, p in zip(keys, prompts) if k not in found}.items(),
                         key=lambda kp: len(kp[1]))  # batches of similar length
        self.totals["from_cache"] += len(set(keys)) - len(missing)
        tokens, start = 0, time.perf_counter()
        with bar(f"generate {spec.model}", total=len(missing), enabled=self.progress and
                 bool(missing), position=1) as b:
            for i in range(0, len(missing), spec.batch_size):
                batch = missing[i:i + spec.batch_size]
                gens = backend.generate([p for _, p in batch])
                found.update(cache.add({k: g for (k, _), g in zip(batch, gens)}))
                tokens += sum(g.tokens for g in gens)
                b.update(len(batch))
                b.set_postfix(tok_s=f"{tokens / max(1e-9, time.perf_counter() - start):.0f}")
        self.totals["generated"] += len(missing)
        self.totals["new_tokens"] += tokens
        out: list[Any] = []
        for k in keys:
            gen = found[k]
            if not gen.text:
                out.append(NoRejected("empty_generation"))
            elif spec.drop_unfinished and not gen.finished:
                out.append(NoRejected("unfinished_generation"))
            else:
                out.append(gen.text)
        return out

    def report(self) -> dict[str, Any]:
        spec = self.spec
        return {"model": spec.model, "revision": spec.revision, "backend": spec.backend,
                "cache": str(GenerationCache.path_of(self._folder(), spec.model, spec.revision,
                                                     settings_of(spec))),
                **self.totals, "settings": settings_of(spec)}
