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


def canonical_rows(n: int, seed: int = 0) -> list[dict]:
    """Canonical rows of every task a preference build pairs: MCQ and yes/no (distractor
    rows under `auto`), open questions and instructions in English and Chinese with and
    without a rationale (<think> or plain answers), subjects shared by many rows or by one,
    a few sources with a single row (no cross_sample partner), some rows without answers."""
    import json
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        task = ("open_qa", "instruction", "mcq", "reasoning", "yes_no")[i % 5]
        zh = i % 3 == 0
        lang = "zh" if zh else "en"
        source = f"solo{i}" if i % 97 == 0 else f"src{i % 3}"
        subject = rng.choice([None, "cardiology", "nephrology", f"rare {i}"])
        options, label, answer, response = [], None, None, None
        if task == "mcq":
            options = [{"label": c, "text": f"选项{c}{i % 7}" if zh else f"option {c} {i % 7}"}
                       for c in "ABCD"]
            label = "ABCD"[i % 4]
            answer = options[i % 4]["text"]
        elif task == "yes_no":
            label = answer = ("yes", "no", "maybe")[i % 3]
        elif i % 41:
            response = (f"Reply {i} on {subject}: rest and fluids. " * (1 + i % 3)
                        if not zh else f"回答{i}：多休息，多喝水。" * (1 + i % 2))
        rows.append({
            "id": f"{source}/x/train/{i:05d}", "source": source, "subset": "x",
            "split": "train", "lang": lang, "task": task,
            "question": f"第{i}题：这是什么病？" if zh else f"Question {i}: which disease is it?",
            "context": None, "options": options, "answer_label": label, "answer": answer,
            "rationale": (f"依据检查结果{i}。" if zh else f"Because of finding {i}.")
            if i % 4 == 0 else None,
            "response": response, "meta": json.dumps({"subject": subject} if subject else {}),
            "raw_sha1": f"{i:040x}"})
    return rows


def through_workers(step, units: list, spill_dir: Path) -> tuple[list[dict], object]:
    """Run a parallel `step` as an engine with workers does, over read units (tables):
    each unit scanned and mapped by a copy of its own (pickled, as shipped, then set up),
    the plan made on `step` (the driver's copy) from the scans in input order, the units
    mapped in reverse order, and the copies' books and report states merged back into
    `step` in input order. Returns (the output rows in input order, the merged books)."""
    import pickle

    from meddata.steps import Books

    def worker():
        copy = pickle.loads(pickle.dumps(step))
        copy.ready()
        return copy

    if step.passes == 2:
        step.begin(spill_dir)
        step.plan(iter([worker().scan(unit) for unit in units]), spill_dir)
    done = {}
    for i in reversed(range(len(units))):
        copy, books = worker(), Books(step.name)
        outs = [copy.map(batch, books) for batch in units[i].to_batches()]
        done[i] = ([r for out in outs if out is not None for r in out.to_pylist()], books,
                   copy.take_state())
    rows, merged = [], Books(step.name)
    for i in range(len(units)):
        out, books, state = done[i]
        rows += out
        merged.dropped.update(books.dropped)
        step.merge_state(state)
    step.close(merged)
    return rows, merged


def toy_exchange_steps():
    """A toy exchange step (rows ordered by a 64-bit hash of their id), a parallel step
    that keeps MCQ rows and one that runs on the driver (not parallel); classes made in a
    function, so Ray pickles them by value (tests/test_ray.py, tests/test_kinds.py)."""
    import numpy as np
    import pyarrow as pa

    from meddata.steps import POSITION, Step, key_hashes

    class ByHash(Step):
        name, needs, passes, parallel, exchange = "by_hash", ("id",), 2, True, True

        def __init__(self):
            self.sorted = np.empty(0, np.uint64)

        def scan(self, batch):
            return pa.table({"h": key_hashes(batch.column("id"))})

        def plan(self, compact, spill_dir):
            self.sorted = np.sort(np.concatenate([np.empty(0, np.uint64)] + [
                t.column("h").to_numpy() for t in compact]))

        def exchange_rows(self):
            return len(self.sorted)

        def map(self, batch, books):
            places = np.searchsorted(self.sorted, key_hashes(batch.column("id")))
            return batch.append_column(POSITION, pa.array(places.astype(np.int64)))

    class Mcq(Step):
        name, needs, parallel = "mcq", ("task",), True

        def map(self, batch, books):
            keep = pa.compute.equal(batch.column("task"), "mcq")
            books.drop("not_mcq", rows=batch.filter(pa.compute.invert(keep)))
            return batch.filter(keep)

    class OnTheDriver(Step):
        name = "on_the_driver"

        def map(self, batch, books):
            return batch

    return [ByHash(), Mcq(), OnTheDriver()]
