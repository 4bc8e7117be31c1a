from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SAMPLES = ROOT.parent / "shared" / "samples" / "raw"

def schemas() -> dict:
    """Every schema the store holds: canonical, each registered kind, packed pretrain."""
    from meddata.builders import registry
    from meddata.builders.pretrain import PACKED_SCHEMA
    from meddata.schema import CANONICAL

    return {"canonical": CANONICAL, **{k: registry.get(k).schema for k in registry.names()},
            "pretrain_packed": PACKED_SCHEMA}


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def store(tmp_path):
    from meddata.store import Store

    return Store(tmp_path / "store")


@pytest.fixture
def samples():
    """The real sample files in ../shared/samples/raw; skipped where ../shared is absent."""
    if not SAMPLES.exists():
        pytest.skip("../shared/samples/raw is not present (a fresh clone)")
    return SAMPLES


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random-weight Qwen2 model and tokenizer, made offline (a folder path)."""
    pytest.importorskip("torch")
    from meddata.testing import tiny_model

    folder = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_model(folder)
    return str(folder)
