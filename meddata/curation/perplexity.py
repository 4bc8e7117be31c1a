"""Perplexity of texts under a small causal language model, for the `perplexity` step.

KenLM models trained on Wikipedia (CCNet, Data-Juicer's perplexity_filter) need a download;
here any local causal LM works, for example the SmolLM2-135M-Instruct that the `smol` extra
ships (alias `smollm2-135m-instruct`), so the step runs offline.

The perplexity of a text is exp(mean negative log-likelihood per token) over its first
`max_tokens` tokens (the first token has no prediction). Texts are scored without padding:
the batch is grouped by token count and each group runs as one forward pass, so a text's
score does not depend on which other texts share its batch (padding changes the numerics
slightly, and the step must give the same rows on any engine, whatever the batch
boundaries). Scores are rounded to 3 decimals for the same reason.
"""

from __future__ import annotations

import math
from collections import defaultdict


class Scorer:
    """A causal LM and its tokenizer, loaded once per worker (from a local folder or a
    meddata model alias; never from a hub at run time unless the name is a hub id and the
    machine is online)."""

    def __init__(self, model: str, max_tokens: int = 512, batch_size: int = 16,
                 device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from meddata.models import resolve_model

        source = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32,
                                                          **source.kwargs)
        self.model.to(device).eval()
        self.device, self.max_tokens, self.batch_size = device, max_tokens, batch_size

    def score(self, texts: list[str]) -> list[float | None]:
        """One perplexity per text; None for a text of fewer than two tokens."""
        import torch

        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True,
                             max_length=self.max_tokens)["input_ids"]
        out: list[float | None] = [None] * len(texts)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, seq in enumerate(ids):
            if len(seq) >= 2:
                groups[len(seq)].append(i)
        with torch.inference_mode():
            for length in sorted(groups):
                members = groups[length]
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start:start + self.batch_size]
                    batch = torch.tensor([ids[i] for i in chunk], device=self.device)
                    logits = self.model(input_ids=batch).logits[:, :-1].float()
                    nll = torch.nn.functional.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                        reduction="none").view(len(chunk), -1).mean(dim=1)
                    for i, value in zip(chunk, nll.tolist()):
                        out[i] = round(math.exp(min(value, 700.0)), 3)
        return out
