"""Every benchmark preset runs: the tests' tiny random model (or --model) evaluated on each
bundled example benchmark, every split, by log-likelihood; open answers by generation.

    python benchmarks/presets_table.py [--model PATH] [--method loglik|generate]

Prints one table row per preset (the per-item records are grouped by preset) and the
comparison table `meddata eval` prints. A random model scores near chance: the point is
that every preset renders, scores and reports.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
BENCHES = [("medqa", "examples/medqa/US/test.jsonl", "medqa"),
           ("medqa", "tests/fixtures/medqa", "medqa-4options"),
           ("medmcqa", "examples/medmcqa", "medmcqa"),
           ("pubmedqa", "examples/pubmedqa", "pubmedqa"),
           ("mmlu", "examples/mmlu/data", "mmlu"),
           ("cmexam", "examples/cmexam", "cmexam"),
           ("cmb", "examples/cmb/CMB-val-merge.json", "cmb-exam"),
           ("cmb", "examples/cmb/CMB-Clin-qa.json", "cmb-clin"),
           ("huatuo26m", "examples/huatuo26m", "huatuo26m"),
           ("sharegpt", "examples/sharegpt", "sharegpt")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--method", default="loglik")
    ap.add_argument("--max-new-tokens", default="16")
    args = ap.parse_args()
    from meddata.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from meddata.testing import tiny_model

            tiny_model(tmp / "tiny")
            model = str(tmp / "tiny")
        store = ["--store", str(tmp / "store")]
        runner = CliRunner()
        for source, path, name in BENCHES:
            out = runner.invoke(cli, [*store, "convert", source, str(ROOT / path), "--name",
                                      name, "--quiet"])
            assert out.exit_code == 0, out.output
        bench_args = [a for _, _, name in BENCHES for a in ("--bench", f"canonical/{name}")]
        out = runner.invoke(cli, [*store, "eval", "--model", model, *bench_args, "--split",
                                  "all", "--method", args.method, "--max-new-tokens",
                                  args.max_new_tokens, "--quiet", "--out", str(tmp / "eval")])
        assert out.exit_code == 0, out.output
        report = json.loads((tmp / "eval" / "results.json").read_text())
        per_preset: dict[str, list] = defaultdict(lambda: [0, 0, 0, 0.0])
        for result in report["models"][0]["results"].values():
            for line in (tmp / "eval" / result["items_file"]).read_text().splitlines():
                item = json.loads(line)
                cell = per_preset[item["preset"] + (" (open answers)" if "correct" not in item
                                                    else "")]
                cell[0] += 1
                if "correct" in item:
                    cell[1] += item["correct"]
                    cell[2] += item.get("multiple", False)
                else:
                    cell[3] += item["rougeL"]
        print("| preset | items | multiple-answer items | accuracy | ROUGE-L |")
        print("|---|---|---|---|---|")
        for preset, (n, correct, multi, rouge) in sorted(per_preset.items()):
            if "open" in preset:
                print(f"| {preset} | {n} | - | - | {rouge / n:.1f} |")
            else:
                print(f"| {preset} | {n} | {multi} | {100 * correct / n:.1f} % | - |")
        print("\n" + out.output)


if __name__ == "__main__":
    main()
