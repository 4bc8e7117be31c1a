"""The model side of evaluation: a base model (a folder, alias or training output, with
an adapter) loaded once for scoring, log-likelihoods of continuations as lm-evaluation-
harness's HFLM computes them, and greedy generation through the chat template."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

SEQ_LEN_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")  # as lm-eval's HFLM


def split_model_spec(spec: str) -> tuple[str, str]:
    """`BASE::ADAPTER` or `BASE:ADAPTER` (when ADAPTER is a folder) -> (base, adapter)."""
    if "::" in spec:
        base, _, adapter = spec.partition("::")
        return base, adapter
    base, sep, adapter = spec.rpartition(":")
    if sep and base and Path(adapter).is_dir():
        return base, adapter
    return spec, ""


def trained_lineage(model: str) -> list[dict]:
    """The stages and data versions behind a meddata training output, first to last (the
    SFT run's data, then the DPO run's ...); empty for any other model."""
    from meddata.train.common import lineage

    manifest = Path(model) / "training_manifest.json"
    if not manifest.exists():
        return []
    return lineage(json.loads(manifest.read_text(encoding="utf-8")), model)


class Scorer:
    def __init__(self, model_spec: str, batch_size: int = 8, max_length: int | None = None):
        import torch

        from meddata.train.common import load_model, load_tokenizer, locate
        from meddata.train.settings import Common

        base_name, adapter = split_model_spec(model_spec)
        base = locate(base_name, Common())
        if adapter:
            base.adapter = adapter
        self.spec = model_spec
        self.base = base
        self.tokenizer = load_tokenizer(base)
        self.model = load_model(base, Common())
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length or self._context_length()
        self.lineage = trained_lineage(base_name)
        self.trained_on = [ref for stage in self.lineage for ref in stage["data"]]

    def _context_length(self) -> int:
        """The model's context length, found where lm-eval's HFLM looks for it."""
        for attr in SEQ_LEN_ATTRS:
            if getattr(self.model.config, attr, None):
                return int(getattr(self.model.config, attr))
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if limit and limit < 10**9 else 2048

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's HFLM._encode_pair for a causal model: trailing whitespace moves from
        the context to the continuation, and the continuation's tokens are the tokens of
        the whole text after the context's own."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        return ctx, whole[len(ctx):]

    def loglik(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation tokens | context), whether every continuation token
        is the model's greedy choice) for each (context, continuation).

        The model input is the last max_length+1 tokens of context+continuation less the
        last one, as lm-eval feeds it. Pairs with the same input (single-token choices of
        one question) share one forward pass; inputs are left-padded with explicit
        positions, and only the logits the continuations need are computed."""
        import torch

        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (context, continuation) in enumerate(pairs):
            ctx, cont = self.encode_pair(context, continuation)
            if len(cont) > self.max_length:
                raise ValueError(f"a choice of {len(cont)} tokens is longer than the "
                                 f"model's {self.max_length}")
            groups[tuple((ctx + cont)[-(self.max_length + 1):-1])].append((i, cont))
        inputs = sorted(groups, key=len)
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start:start + self.batch_size]
            width = max(len(x) for x in batch)
            keep = max(len(t) for x in batch for _, t in groups[x])
            ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in batch],
                               device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch],
                                device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    logits_to_keep=keep).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for b, x in enumerate(batch):
                for i, cont in groups[x]:
                    rows = logp[b, keep - len(cont):]   # the logits that predict cont
                    target = torch.tensor(cont, device=rows.device)
                    out[i] = (float(rows.gather(-1, target[:, None]).sum()),
                              bool((rows.argmax(-1) == target).all()))
        return out

    def generate(self, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 if getattr(tok, "chat_template", None) else p[-1]["content"] for p in prompts]
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            with torch.no_grad():
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out
