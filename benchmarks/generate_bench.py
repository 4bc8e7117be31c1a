"""Weak-model generation throughput: rows/s and new tokens/s.

    python benchmarks/generate_bench.py [--size tiny|0.5b] [--rows 64] [--batch-size 16]
                                        [--max-new-tokens 64] [--backends transformers,vllm]

Builds a random-weight Qwen2 model offline (meddata.testing): `tiny` (2 layers, hidden 32;
the CPU default) or `0.5b` (Qwen2.5-0.5B's shape: 24 layers, hidden 896, 14 heads, 2 KV
heads, intermediate 4864, vocabulary 151,936; for a GPU). Then it generates rejected
answers for MCQ prompts through meddata's weak_model backends with a fixed number of new
tokens (EOS suppressed, so every row costs the same) and prints rows/s and tokens/s per
backend. vLLM runs only where it is installed and CUDA is present.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

QWEN25_05B = {"hidden_size": 896, "layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "intermediate_size": 4864}


def make_model(folder: Path, size: str) -> None:
    from meddata.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer(folder)
    if size == "tiny":
        tiny_model(folder, tokenizer=tok)
        return
    tok.add_tokens([f"<extra_{i}>" for i in range(151_936 - len(tok))])
    tiny_model(folder, tokenizer=tok, hidden_size=QWEN25_05B["hidden_size"],
               layers=QWEN25_05B["layers"],
               **{k: v for k, v in QWEN25_05B.items() if k not in ("hidden_size", "layers")})


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Question {i}: which vitamin deficiency causes "
              f"scurvy?\n\nOptions:\nA. Vitamin A\nB. Vitamin B1\nC. Vitamin C\nD. Vitamin D"
              + " Explain." * (i % 5)}] for i in range(n)]


def run(backend_name: str, folder: Path, args) -> dict:
    from meddata.builders.weak_model import BACKENDS
    from meddata.recipe import RejectedSpec

    spec = RejectedSpec(strategy="weak_model", model=str(folder), backend=backend_name,
                        max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0,
                        batch_size=args.batch_size)
    backend = BACKENDS[backend_name](spec)
    if backend_name == "transformers":  # a fixed cost per row: no early EOS
        backend.model.generation_config.min_new_tokens = args.max_new_tokens
    texts = sorted((backend.render(m) for m in prompts(args.rows)), key=len)
    backend.generate(texts[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), args.batch_size):
        tokens += sum(g.tokens for g in backend.generate(texts[i:i + args.batch_size]))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_s": len(texts) / seconds, "tokens_s": tokens / seconds,
            "device": getattr(backend, "device", "cuda")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "0.5b"], default="tiny")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--backends", default="transformers,vllm")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp), args.size)
        for name in args.backends.split(","):
            if name == "vllm" and not torch.cuda.is_available():
                print("vllm: skipped (no CUDA device)")
                continue
            try:
                r = run(name, Path(tmp), args)
            except RuntimeError as e:
                print(f"{name}: skipped ({e})")
                continue
            print(f"{name} [{args.size}, {r['device']}]: {args.rows} rows x "
                  f"{args.max_new_tokens} new tokens, batch {args.batch_size}: "
                  f"{r['rows_s']:.1f} rows/s, {r['tokens_s']:.0f} tokens/s")


if __name__ == "__main__":
    main()
