"""An LLM-judge reward over an OpenAI-compatible chat endpoint (`POST {url}/chat/completions`).

The judge sees the question, the reference answer and the policy's answer (only the text
after </think>) and picks one tier of a five-tier rubric; each tier maps to a score
(configurable): A same meaning as the reference 2.0, B different wording but medically
reasonable 0.5, C reasonable but outside medicine 0.0, D contradicts the reference -0.5,
E incoherent -1.0.

Calls run concurrently (an `async def` reward that TRL awaits), at most `concurrency` at a
time, each with a timeout and `retries` retries with exponential backoff; answers are
cached by (judge model, question, reference, answer), in memory and optionally in a JSON
Lines file. When the endpoint keeps failing, `on_failure` decides: `fail` raises (the
default: training stops with the reason), `skip` returns None (the row is left out of this
reward), `zero` scores 0.0.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path

from meddata.evaluation.answers import after_think, completion_text
from meddata.secrets import redact_text, redact_url

TIERS = {"A": "same", "B": "reasonable", "C": "non_medical", "D": "contradicts",
         "E": "incoherent"}
DEFAULT_SCORES = {"same": 2.0, "reasonable": 0.5, "non_medical": 0.0, "contradicts": -0.5,
                  "incoherent": -1.0}
RUBRIC = """You grade a medical answer against a reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Choose exactly one grade:
A. It means the same as the reference answer.
B. It is worded differently from the reference but is medically reasonable.
C. It is reasonable but not about medicine.
D. It contradicts the reference answer.
E. It is incoherent or does not answer.

Reply with the letter only."""


class JudgeUnavailable(RuntimeError):
    """The judge endpoint failed after every retry (with on_failure: fail)."""


class Judge:
    def __init__(self, url: str = "http://127.0.0.1:8000/v1", model: str = "judge",
                 api_key_env: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 concurrency: int = 8, on_failure: str = "fail",
                 scores: dict[str, float] | None = None, cache_file: str | None = None,
                 max_tokens: int = 4):
        if on_failure not in ("fail", "skip", "zero"):
            raise ValueError(f"judge on_failure {on_failure!r}: use fail, skip or zero")
        if api_key_env and not os.environ.get(api_key_env):
            raise ValueError(f"judge api_key_env: the environment variable {api_key_env} is "
                             "not set")
        self.url = url.rstrip("/")
        # the key is read from the environment variable the config names (`api_key` in a
        # config file works too, but is never written anywhere: manifests redact it)
        self.model = model
        self._api_key = os.environ[api_key_env] if api_key_env else api_key
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.concurrency, self.on_failure = concurrency, on_failure
        self.scores = {**DEFAULT_SCORES, **(scores or {})}
        self.max_tokens = max_tokens
        self.cache: dict[str, str] = {}
        self.cache_file = Path(cache_file) if cache_file else None
        if self.cache_file and self.cache_file.exists():
            for line in self.cache_file.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                self.cache[rec["key"]] = rec["tier"]
        self.calls = 0  # HTTP requests made (the tests count them)

    def key(self, question: str, reference: str, answer: str) -> str:
        return hashlib.sha256(json.dumps([self.model, question, reference, answer],
                                         ensure_ascii=False).encode()).hexdigest()

    @staticmethod
    def parse(text: str) -> str | None:
        m = re.search(r"\b([A-E])\b", text.strip().upper())
        return TIERS[m.group(1)] if m else None

    async def _ask(self, client, question: str, reference: str, answer: str) -> str:
        import httpx

        body = {"model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": RUBRIC.format(
                    question=question, reference=reference, answer=answer)}]}
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                self.calls += 1
                resp = await client.post(f"{self.url}/chat/completions", json=body,
                                         headers=headers, timeout=self.timeout)
                resp.raise_for_status()
                tier = self.parse(resp.json()["choices"][0]["message"]["content"] or "")
                if tier is None:
                    raise ValueError(f"judge reply has no grade A-E: {resp.text[:200]!r}")
                return tier
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
                last = e
                if attempt < self.retries:
                    await asyncio.sleep(self.backoff * 2 ** attempt)
        raise JudgeUnavailable(f"judge at {redact_url(self.url)} failed after "
                               f"{self.retries + 1} attempts: {redact_text(str(last))}")

    async def score_all(self, questions: list[str], references: list[str],
                        answers: list[str]) -> list[float | None]:
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient() as client:
            async def one(q: str, ref: str, ans: str) -> float | None:
                k = self.key(q, ref, ans)
                if k not in self.cache:
                    async with sem:
                        try:
                            tier = await self._ask(client, q, ref, ans)
                        except JudgeUnavailable:
                            if self.on_failure == "fail":
                                raise
                            return None if self.on_failure == "skip" else 0.0
                    self.cache[k] = tier
                    if self.cache_file:
                        with open(self.cache_file, "a", encoding="utf-8") as f:
                            f.write(json.dumps({"key": k, "tier": tier}) + "\n")
                return self.scores[self.cache[k]]
            return list(await asyncio.gather(*(one(q, r, a) for q, r, a in
                                               zip(questions, references, answers))))

    async def reward(self, prompts, completions, answer=None, **kwargs):
        """The reward function TRL awaits."""
        questions = [completion_text(p) if not isinstance(p, list) else
                     next((m["content"] for m in reversed(p) if m["role"] == "user"), "")
                     for p in prompts]
        answers = [after_think(completion_text(c)).strip() for c in completions]
        references = [a or "" for a in (answer or [""] * len(completions))]
        return await self.score_all(questions, references, answers)
