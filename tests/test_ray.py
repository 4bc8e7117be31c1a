"""The Ray engine publishes what the local engine publishes: the same version ids, the same
row conservation per stage, the same rejects, on a local Ray with 2 CPUs and on a
two-node cluster started here; a failing task fails the run with its own error and
publishes nothing."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from collections import Counter

import pyarrow as pa
import pytest
from click.testing import CliRunner

from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.cli import cli
from meddata.engines import LocalEngine, choose
from meddata.engines.ray import RayEngine
from meddata.schema import CANONICAL

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the ray extra is not installed")
if importlib.util.find_spec("ray") is not None:
    import ray

LOCAL, RAY = LocalEngine(), RayEngine()
WORDS = ("patient fever cough chest pain hypertension diabetes renal failure cirrhosis anemia "
         "vitamin deficiency nerve artery vein muscle fracture infection treatment diagnosis "
         "management chronic acute syndrome clinical trial outcome risk therapy dose").split()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the module (the engine uses a Ray it finds running)."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def generated(n: int, prefix: str, seed: int) -> list[dict]:
    """MCQ rows, a fifth of them near copies (one word changed) of an earlier row."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if rows and rng.random() < 0.2:
            base = rng.choice(rows)
            words = base["question"].split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            question, options, answer = " ".join(words), base["options"], base["answer"]
        else:
            question = " ".join(rng.choices(WORDS, k=rng.randint(12, 30)))
            options = [{"label": lab, "text": " ".join(rng.choices(WORDS, k=3))}
                       for lab in "ABCD"]
            answer = options[rng.randrange(4)]["text"]
        label = next(o["label"] for o in options if o["text"] == answer)
        rows.append({"id": f"gen/{prefix}/train/{i:06d}", "source": f"gen{prefix}",
                     "subset": prefix, "split": rng.choice(["train", "train", "train", "test"]),
                     "task": "mcq", "lang": "en", "question": question, "context": None,
                     "options": options, "answer_label": label, "answer": answer,
                     "rationale": None, "response": None, "meta": "{}",
                     "raw_sha1": f"{seed:04x}{i:036x}"})
    return rows


def publish_rows(store, name: str, rows: list[dict]):
    table = pa.Table.from_pylist(rows, schema=CANONICAL)
    return store.publish("canonical", name, CANONICAL, table.to_batches(max_chunksize=4096))


def same(store, build):
    """Build on both engines; assert the same id, stages and rejects; return the version."""
    local, on_ray = build(LOCAL, "local"), build(RAY, "ray")
    assert on_ray.id == local.id
    assert on_ray.manifest["engine"] == "ray" and local.manifest["engine"] == "local"

    def books(v):
        return [(s["stage"], s["rows_in"], s["rows_out"], s["dropped"])
                for s in v.manifest["stages"]]
    assert books(on_ray) == books(local)
    for v in (local, on_ray):  # conservation, checked on the manifest itself
        for s in v.manifest["stages"]:
            assert s["rows_in"] == s["rows_out"] + sum(s["dropped"].values())

    def rejects(v):
        return Counter((r["stage"], r["reason"], r["raw"]) for r in v.rejects().to_pylist())
    assert rejects(on_ray) == rejects(local)
    # the reports too: listed examples are merged back in input order
    for key in ("dedup", "decontam", "rejected"):
        assert on_ray.manifest.get(key) == local.manifest.get(key), key
    assert on_ray.manifest["stats"].get("length_tokens") == \
        local.manifest["stats"].get("length_tokens")
    return on_ray


@pytest.mark.parametrize("kind,settings", [
    ("sft", {"dedup": {}, "validation_ratio": 0.2}),
    ("preference", {}),
    ("kto", {}),
    ("prompts", {"max_tokens": 300}),
])
def test_examples_build_the_same_version_on_ray(local_ray, store, kind, settings):
    data = pipeline.examples_recipe().to_dict()
    data.update(settings, kind=kind)
    recipe = recipe_mod.from_dict(data)
    same(store, lambda engine, tag: pipeline.build(kind, recipe, store, name=f"{kind}-{tag}",
                                                 progress=False, report=False, engine=engine))


def test_packed_pretrain_with_a_tokenizer_is_the_same_on_ray(local_ray, store, tmp_path):
    from meddata.testing import tiny_tokenizer

    tiny_tokenizer(tmp_path / "tok")
    data = pipeline.examples_recipe().to_dict()
    data.update(kind="pretrain", tokenizer=str(tmp_path / "tok"), max_tokens=64, pack=True,
                validation_ratio=0.1)
    recipe = recipe_mod.from_dict(data)
    v = same(store, lambda engine, tag: pipeline.build(
        "pretrain", recipe, store, name=f"pretrain-{tag}", progress=False, report=False,
        engine=engine))
    length, cache = v.manifest["stats"]["length_tokens"], v.manifest["stats"]["token_cache"]
    assert length["max"] > 0 and cache["hits"] + cache["misses"] > 0  # merged from the tasks


def test_packing_and_writing_run_in_the_workers(local_ray, store, tmp_path, monkeypatch):
    """pretrain --pack over several read units: the workers pack (the driver's own
    Pack.map_unit fails if called) and write the shards (the driver's publisher never
    writes a row), on both engines the same version; each unit's sequences are its own
    and every shard is a unit's."""
    from meddata.builders.pretrain import Pack
    from meddata.engines.units import plan_units
    from meddata.store import Publisher
    from meddata.testing import tiny_tokenizer

    tiny_tokenizer(tmp_path / "tok")
    v = publish_rows(store, "docs", generated(30_000, "p", 11))
    assert len(plan_units([v])) >= 3
    recipe = recipe_mod.from_dict({
        "kind": "pretrain", "sources": [{"ref": "canonical/docs"}],
        "tokenizer": str(tmp_path / "tok"), "max_tokens": 64, "pack": True,
        "validation_ratio": 0.1})

    def not_here(*args, **kwargs):
        raise AssertionError("the driver did a worker's job")

    def build(engine, tag):
        with monkeypatch.context() as m:
            m.setattr(Publisher, "write", not_here)
            if tag == "ray":
                m.setattr(Pack, "map_unit", not_here)
            return pipeline.build("pretrain", recipe, store, name=f"packed-{tag}",
                                  progress=False, report=False, engine=engine)

    built = same(store, build)
    stages = {s["stage"]: s for s in built.manifest["stages"]}
    assert stages["pack"]["rows_in"] == stages["pack"]["rows_out"] > 20_000
    ids = [r for b in built.iter_batches(columns=["id"]) for r in b.column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == built.rows == stages["pack"]["sequences"]
    units = {i.split("/")[-1].split("-")[0] for i in ids}
    assert len(units) >= 3
    shards = [s["path"] for s in built.manifest["shards"]]
    assert {p.split("-")[1] for p in shards} == units and shards == sorted(shards)


def test_generated_sources_in_several_blocks(local_ray, store):
    """Two sources sharing ids, a limit, a weight, the test split, near duplicates, a
    benchmark to decontaminate against: every global step on more than one block."""
    a = generated(12_000, "a", 1)
    b = generated(9_000, "b", 2)
    for row in b[:1500]:  # the same ids as source a: the first source keeps them
        row["id"] = row["id"].replace("/b/", "/a/")
    bench = [dict(r, id=r["id"].replace("gen/", "bench/")) for r in a[100:160]]
    va, vb = publish_rows(store, "gen-a", a), publish_rows(store, "gen-b", b)
    publish_rows(store, "bench", bench)
    from meddata.engines.units import plan_units

    units = plan_units([va, vb])  # row groups of 8,192 rows, a unit of one or more
    assert len(units) >= 2 and sum(u.rows for u in units) == 21_000
    assert any(len({part[0] for part in u.parts}) == 2 for u in units)  # both versions
    recipe = recipe_mod.from_dict({
        "kind": "sft", "sources": [{"ref": "canonical/gen-a", "limit": 8000},
                                   {"ref": "canonical/gen-b", "weight": 0.7}],
        "dedup": {}, "decontam": {"against": ["canonical/bench"]}, "validation_ratio": 0.1})
    v = same(store, lambda engine, tag: pipeline.build(
        "sft", recipe, store, name=f"gen-{tag}", progress=False, report=False, engine=engine))
    stages = {s["stage"]: s for s in v.manifest["stages"]}
    assert {"test_split", "duplicate_id", "weight_sampled_out", "over_limit"} <= set(
        stages["select"]["dropped"])
    assert stages["dedup"]["dropped"]["near_duplicate"] > 100
    assert stages["decontam"]["dropped"]["contaminated"] > 0
    assert v.manifest["decontam"]["summary"]["contaminated"] == \
        stages["decontam"]["dropped"]["contaminated"]
    assert stages["split"]["validation"] > 0


def test_cli_dedup_and_decontam_on_ray(local_ray, store):
    publish_rows(store, "corpus", generated(6000, "c", 3))
    publish_rows(store, "bench", [dict(r, id=r["id"] + "-b") for r in generated(40, "c", 3)])
    runner, s = CliRunner(), ["--store", str(store.root)]
    ids = {}
    for engine in ("local", "ray"):
        out = runner.invoke(cli, s + ["dedup", "canonical/corpus", "--name", f"d-{engine}",
                                      "--engine", engine, "--quiet"])
        assert out.exit_code == 0, out.output
        out = runner.invoke(cli, s + ["decontam", f"canonical/d-{engine}", "--against",
                                      "canonical/bench", "--name", f"dc-{engine}",
                                      "--engine", engine, "--quiet"])
        assert out.exit_code == 0, out.output
        ids[engine] = (store.resolve(f"canonical/d-{engine}"),
                       store.resolve(f"canonical/dc-{engine}"))
    for local, on_ray in zip(ids["local"], ids["ray"]):
        assert local.id == on_ray.id and local.rows == on_ray.rows
        assert local.manifest["stages"] == on_ray.manifest["stages"]
    summary = ids["ray"][0].manifest["dedup"]["summary"]
    assert summary["near_duplicate"] > 0
    assert summary == ids["local"][0].manifest["dedup"]["summary"]


def test_cli_build_on_ray_from_the_environment(local_ray, store, monkeypatch):
    monkeypatch.setenv("MEDDATA_ENGINE", "ray")
    out = CliRunner().invoke(cli, ["--store", str(store.root), "build", "sft", "--no-report"])
    assert out.exit_code == 0, out.output
    v = store.resolve("sft/examples")
    assert v.manifest["engine"] == "ray"
    select = v.manifest["stages"][0]
    # the bar counts the input rows the tasks read, to the end
    # (stderr is no terminal here: the bar is plain lines, the last one at 100 %)
    n = select["rows_in"]
    assert f"build sft: {n}/{n} rows (100 %)" in out.stderr


def test_a_failing_task_fails_the_run_and_publishes_nothing(local_ray, store):
    from meddata import runner
    from meddata.steps.render import Render

    v = publish_rows(store, "corpus", generated(300, "f", 4))
    # json.loads of a row (a dict) raises TypeError inside the Ray task
    step = Render("boom", json.loads, pa.schema([("id", pa.string())]))
    with pytest.raises(TypeError, match="JSON object must be str"):
        runner.publish(store, "canonical", "broken", CANONICAL, runner.read_versions([v]),
                       [step], manifest={}, engine=RAY)
    assert [name for _, name in store.names()] == ["corpus"]
    assert not [p for p in (store.root / ".tmp").iterdir() if p.name.startswith("canonical-")]


@pytest.mark.parametrize("source", ["pubmedqa", "medmcqa", "medqa", "mmlu", "cmb", "corpus",
                                    "chinese_medical_dialogue", "huatuo26m"])
def test_convert_on_ray_is_the_same_version(local_ray, store, source):
    """A task per file, rows back in file order: the same id, counts, rejects and report
    (PubMedQA's ground-truth join is counted across the tasks' copies of the converter)."""
    from conftest import EXAMPLES
    from meddata import convert
    from meddata.converters import get

    results = [convert.publish(get(source)(), [str(EXAMPLES / source)], store,
                           name=f"{source}-{engine.name}", progress=False, engine=engine)
               for engine in (LOCAL, RAY)]
    local, on_ray = results
    assert on_ray.version.id == local.version.id
    assert (on_ray.rows_in, on_ray.rows_out, on_ray.rejects) == \
        (local.rows_in, local.rows_out, local.rejects)
    assert on_ray.version.manifest["convert_report"] == local.version.manifest["convert_report"]
    cols = ["file", "position", "raw", "reason", "detail"]
    assert Counter(map(str, on_ray.version.rejects().select(cols).to_pylist())) == \
        Counter(map(str, local.version.rejects().select(cols).to_pylist()))


def test_convert_on_ray_rejects_and_duplicates_across_files(local_ray, store, tmp_path):
    """Several files, the same id in two of them, a broken line, the vectorized path."""
    from meddata import convert
    from meddata.converters import get

    rec = {"question": "Which drug?", "opa": "A1", "opb": "B1", "opc": "C1", "opd": "D1",
           "cop": 1, "exp": None, "subject_name": "Pharmacology", "topic_name": None}
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(3):
        lines = [json.dumps({**rec, "id": f"q{k}-{i}" if i else "same", "cop": 1 + i % 4})
                 for i in range(400)]
        lines.insert(17, "{not json")
        (raw / f"part{k}.jsonl").write_text("\n".join(lines) + "\n")
    results = [convert.publish(get("medmcqa")(), [str(raw)], store, name=engine.name,
                           progress=False, engine=engine) for engine in (LOCAL, RAY)]
    assert results[1].version.id == results[0].version.id
    assert results[1].rejects == results[0].rejects == {"unparseable": 3, "duplicate_id": 2}
    assert results[1].rows_out == 3 * 400 - 2  # the same id in each file: kept once


@needs_ray
def test_two_node_cluster(store):
    """Nothing assumes one node: a cluster of two nodes started here, joined by address."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        from meddata.engines.units import plan_units

        v = publish_rows(store, "gen-a", generated(20_000, "a", 5))
        assert len(plan_units([v])) >= 2  # tasks for both nodes
        recipe = recipe_mod.from_dict({"kind": "preference",
                                       "sources": [{"ref": "canonical/gen-a"}],
                                       "dedup": {}, "rejected": {"strategy": "cross_sample"},
                                       "validation_ratio": 0.1})
        local = pipeline.build("preference", recipe, store, name="local", progress=False,
                               report=False, engine=LOCAL)
        on_ray = pipeline.build("preference", recipe, store, name="ray", progress=False,
                                report=False, engine=RayEngine(address=cluster.address))
        assert on_ray.id == local.id
        assert on_ray.manifest["stages"] == local.manifest["stages"]
        assert not ray.is_initialized()  # the command joined the cluster and left it
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def test_engine_choice(monkeypatch):
    monkeypatch.delenv("MEDDATA_ENGINE", raising=False)
    monkeypatch.delenv("MEDDATA_RAY_ADDRESS", raising=False)
    assert isinstance(choose(), LocalEngine)
    monkeypatch.setenv("MEDDATA_RAY_ADDRESS", "head:6379")
    assert isinstance(choose(), LocalEngine)  # an address alone does not choose Ray
    monkeypatch.setenv("MEDDATA_ENGINE", "ray")
    chosen = choose()
    assert isinstance(chosen, RayEngine) and chosen.address == "head:6379"
    assert isinstance(choose("local"), LocalEngine)
    assert choose(recipe_engine="ray").name == "ray"
    with pytest.raises(ValueError, match="--ray-address needs --engine ray"):
        choose("local", "ray://head:10001")
    with pytest.raises(ValueError, match="unknown engine"):
        choose("spark")


def test_engine_ray_without_ray_says_what_to_install(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    out = CliRunner().invoke(cli, ["--store", str(store.root), "build", "sft", "--engine",
                                   "ray", "--quiet"])
    assert out.exit_code == 1
    assert out.stderr.strip().splitlines()[-1] == (
        'error: --engine ray needs Ray Data: pip install -e ".[ray]" (or pip install '
        '"meddata[ray]")')
    assert not list(store.versions("sft"))


# ---- a lost worker or tally is retried (issue 32 item 9) ------------------------------------------
def crash_once(marker_dir: str) -> None:
    """In a Ray task, once per marker folder: kill the tally actor (Ray may restart it) and
    then this worker process, as a machine under load loses them."""
    import os
    import signal
    from pathlib import Path

    from ray._private import state  # (the actors' pids; a test-only look inside Ray)

    marker = Path(marker_dir) / "crashed"
    if marker.exists():
        return
    marker.write_text("1")
    for actor in state.actors().values():
        if actor["ActorClassName"] == "_Tally" and actor["State"] == "ALIVE":
            os.kill(actor["Pid"], signal.SIGKILL)
    os._exit(1)


def _crashing_hwtcm(marker_dir: str):
    from meddata.converters.hwt_cm import HWTCM

    class Crashing(HWTCM):
        def row(self, rec):
            crash_once(marker_dir)
            return super().row(rec)

    return Crashing


def test_a_lost_worker_and_tally_are_retried(local_ray, store, tmp_path):
    from meddata import convert, runner
    from meddata.steps.render import Render

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(2):
        (raw / f"part{k}.jsonl").write_text("".join(
            json.dumps({"instruction": f"Question {k}-{i}?", "output": f"Answer {i}."}) + "\n"
            for i in range(50)) + "{not json\n")
    (tmp_path / "c0").mkdir()
    (tmp_path / "c0" / "crashed").write_text("1")  # the local engine must not crash
    (tmp_path / "c1").mkdir()
    versions = []
    for n, engine in enumerate((LOCAL, RAY)):
        conv = _crashing_hwtcm(str(tmp_path / f"c{n}"))()
        versions.append(convert.publish(conv, [str(raw)], store, name=f"conv-{engine.name}",
                                    progress=False, engine=engine, max_reject_rate=1.0))
    assert versions[1].version.id == versions[0].version.id
    assert versions[1].rejects == versions[0].rejects == {"unparseable": 2}
    assert (tmp_path / "c1" / "crashed").exists()  # it did crash

    v = publish_rows(store, "gen", generated(300, "k", 7))
    marker = tmp_path / "build"
    marker.mkdir()

    def render(row):
        crash_once(str(marker))
        return {"id": row["id"]}

    schema = pa.schema([("id", pa.string())])
    built = [runner.publish(store, "canonical", f"b-{e.name}", schema,
                            runner.read_versions([v]), [Render("render", render, schema)],
                            manifest={}, engine=e)
             for e in (RAY, LOCAL)]
    assert built[0].id == built[1].id and (marker / "crashed").exists()


# ---- preference pairing in the workers -------------------------------------------------------
def test_preference_pairs_in_the_workers_the_same_version(local_ray, store, monkeypatch):
    """cross_sample over several blocks: the workers scan and map (the driver only plans:
    its own Pair.scan and Pair.map are made to fail), and the version, stages, rejects and
    the rejected report are the local engine's."""
    from conftest import canonical_rows
    from meddata.builders.preference import Pair
    from meddata.engines.units import plan_units

    v = publish_rows(store, "mixed", canonical_rows(24_000, seed=3))
    assert len(plan_units([v])) >= 3
    recipe = recipe_mod.from_dict({"kind": "preference", "sources": [{"ref": "canonical/mixed"}],
                                   "rejected": {"strategy": "cross_sample"},
                                   "validation_ratio": 0.1})

    def not_here(*args, **kwargs):
        raise AssertionError("pairing ran on the driver")

    def build(engine, tag):
        with monkeypatch.context() as m:
            if tag == "ray":
                m.setattr(Pair, "scan", not_here)
                m.setattr(Pair, "map", not_here)
            return pipeline.build("preference", recipe, store, name=f"pairs-{tag}",
                                  progress=False, report=False, engine=engine)

    v = same(store, build)
    check = v.manifest["rejected"]["check"]
    assert check["matched"] > 10_000 and check["no_matching_rejected"] > 0


# ---- large input files read in spans (issue 31) ---------------------------------------------------
# A range size of a few hundred bytes splits each file below into many spans; the version,
# rows, rejects (with their positions) and the converter's report must be what one reader
# over the whole file gives, on the local engine and on Ray.
TINY_RANGE = 700


def _positions_hwtcm():
    from meddata.converters.hwt_cm import HWTCM

    class Positions(HWTCM):
        """Keeps the position of every record it converts, as report state: merged back
        from the tasks' copies, the list must come out in file order."""

        def row(self, rec):
            self.__dict__.setdefault("seen", []).append(rec.position)
            return super().row(rec)

        def take_state(self):
            seen, self.seen = self.__dict__.get("seen", []), []
            return seen or None

        def merge_state(self, state):
            self.__dict__.setdefault("seen", []).extend(state)

        def report(self):
            return {"positions": self.__dict__.get("seen", [])}

    return Positions


def _convert_split_and_whole(store, monkeypatch, make_conv, path):
    """Convert `path` whole on the local engine, then split into spans on the local engine
    and on Ray; assert the same version and books; return the three results."""
    from meddata import convert, ranges

    split = ranges.FileRanges(make_conv(), [path], TINY_RANGE)
    assert len(split.spans([ranges.count_chunk(c) for c in split.chunks])) > 5
    results = []
    for tag, size, engine in (("whole", ranges.RANGE_BYTES, LOCAL), ("local", TINY_RANGE, LOCAL),
                              ("ray", TINY_RANGE, RAY)):
        monkeypatch.setattr(ranges, "RANGE_BYTES", size)
        results.append(convert.publish(make_conv(), [str(path)], store,
                                       name=f"{path.stem}-{tag}", progress=False,
                                       engine=engine, max_reject_rate=1.0))
    whole, local, on_ray = results
    for other in (local, on_ray):
        assert other.version.id == whole.version.id
        assert (other.rows_in, other.rows_out, other.rejects) == \
            (whole.rows_in, whole.rows_out, whole.rejects)
        assert other.version.manifest["convert_report"] == \
            whole.version.manifest["convert_report"]
    # the same rejects, each reason's in the same order (how the reasons interleave in
    # rejects.parquet follows batching: a span's rows are flushed at its end)
    for other in (local, on_ray):
        assert _rejects_by_reason(other) == _rejects_by_reason(whole)
    return results


def _rejects_by_reason(result) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in result.version.rejects().select(
            ["file", "position", "raw", "reason", "detail"]).to_pylist():
        out.setdefault(r["reason"], []).append(r)
    return out


def _reject_positions(result, reason):
    return sorted(r["position"] for r in result.version.rejects().to_pylist()
                  if r["reason"] == reason)


def test_a_large_jsonl_file_in_spans_is_the_same_version(local_ray, store, tmp_path,
                                                         monkeypatch):
    """JSON Lines in spans, through the record path (with report state merged back in
    span order) and through MedMCQA's vectorized path: malformed, blank, long and
    non-UTF-8 lines, and ids seen before."""
    from meddata.converters import get

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rng = random.Random(31)
    lines, broken = [], []
    mcq = {"question": "", "opa": "A1", "opb": "B1", "opc": "C1", "opd": "D1", "cop": 1,
           "exp": None, "subject_name": "Pharmacology", "topic_name": None}
    for i in range(1, 401):
        kind = rng.random()
        if kind < 0.05:
            lines.append(b"{not json")
            broken.append(i)
        elif kind < 0.08:
            lines.append(b"")
        elif kind < 0.11:  # cp1252 bytes: not UTF-8
            lines.append(json.dumps({"instruction": f"caf\xe9 {i}?", "output": "x", **mcq,
                                     "id": f"c{i}"}, ensure_ascii=False).encode("cp1252"))
            broken.append(i)
        else:
            text = f"Question {i} " + " ".join(rng.choices(WORDS, k=rng.choice([5, 5, 400])))
            lines.append(json.dumps({"instruction": text, "output": f"Answer {i % 40}.",
                                     **mcq, "question": text, "cop": 1 + i % 4,
                                     "id": "same" if i % 50 == 0 else f"q{i}"}).encode())
    raw = tmp_path / "dev.jsonl"  # (MedMCQA's split comes from the name)
    raw.write_bytes(b"\n".join(lines) + b"\n")
    positions = _positions_hwtcm()
    whole, _, _ = _convert_split_and_whole(store, monkeypatch, positions, raw)
    assert _reject_positions(whole, "unparseable") == broken
    seen = whole.version.manifest["convert_report"]["positions"]
    assert seen == sorted(seen) and len(seen) == whole.rows_in - len(broken)
    whole, _, _ = _convert_split_and_whole(store, monkeypatch, get("medmcqa"), raw)
    assert whole.rejects["duplicate_id"] == len(range(50, 401, 50)) - 1 - sum(
        1 for i in broken if i % 50 == 0)


def test_a_large_csv_file_in_spans_is_the_same_version(local_ray, store, tmp_path, monkeypatch):
    """CMExam CSV with quoted fields over several lines (embedded newlines, commas, escaped
    "" quotes), CRLF record ends, a stray quote in an unquoted field (which fools the
    quote count, so spans are read again on the driver) and a quote that never closes."""
    from meddata import ranges
    from meddata.converters import get

    header = ("Question,Options,Answer,Explanation,Disease Group,Clinical Department,"
              "Medical Discipline,Competency,Difficulty level")
    rng = random.Random(32)
    records = []
    for i in range(300):
        options = "\n".join(f"{lab} 选项{i}{lab}, 说明" for lab in "ABCDE")
        question = f"第{i}题：患者，{rng.randint(20, 80)}岁，最可能的诊断是"
        explain = f'"解析{i}：所谓""{rng.choice(WORDS)}"",见\n教材"'
        if i == 170:
            question += '（患者说"头痛）'  # a stray quote: taken literally
        if i == 240:
            question += '（又说"头晕）'
        records.append(f'{question},"{options}",{"ABCDE"[i % 5]},{explain},循环,心内科,'
                       f"临床医学,诊断,中")
    records.insert(280, '未闭合,"A 一\nB 二,C,解析,循环,心内科,临床医学,诊断,中')
    raw = tmp_path / "test.csv"
    raw.write_bytes(("\r\n".join([header, *records]) + "\r\n").encode())

    re_read: list[set[int]] = []
    stitch = ranges.stitch

    def spying(spans, run_here, ahead=None, dropped=None):
        dropped = set() if dropped is None else dropped
        re_read.append(dropped)
        yield from stitch(spans, run_here, ahead, dropped)

    monkeypatch.setattr(ranges, "stitch", spying)
    whole, local, on_ray = _convert_split_and_whole(store, monkeypatch, get("cmexam"), raw)
    assert re_read[-1]  # Ray's reading of some spans was dropped, and read again here
    # (the stray quotes make one reader, split or not, take records 170 to 239 for one)
    assert whole.rows_out > 200
    line = raw.read_bytes()[:raw.read_bytes().index("未闭合".encode())].count(b"\n") + 1
    assert [(r["position"], r["raw"][:3]) for r in whole.version.rejects().to_pylist()
            if r["reason"] == "unparseable"] == [(line, "未闭合")]


def test_a_large_parquet_file_in_spans_of_row_groups(local_ray, store, tmp_path, monkeypatch):
    """A Parquet file of many row groups (as a hub dataset downloaded to a folder holds),
    read a few row groups a task, with rejects and repeated ids."""
    import pyarrow.parquet as pq

    from meddata.converters import get

    rows = [{"id": f"doc{i % 290}", "title": f"Title {i}",
             "text": "" if i % 37 == 0 else " ".join(WORDS[i % 7:i % 7 + 12])}
            for i in range(300)]
    folder = tmp_path / "hub"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "train-00000.parquet",
                   row_group_size=16)
    assert pq.ParquetFile(folder / "train-00000.parquet").metadata.num_row_groups == 19
    whole, _, _ = _convert_split_and_whole(store, monkeypatch, get("corpus"),
                                           folder / "train-00000.parquet")
    assert _reject_positions(whole, "missing_field:text") == [i + 1 for i in range(0, 300, 37)]
    # rows 290 to 299 repeat the ids of rows 0 to 9, where both rows have text
    assert whole.rejects["duplicate_id"] == sum(1 for i in range(290, 300)
                                                if i % 37 and (i - 290) % 37)


# ---- KTO unpairing in the workers: an exchange over buckets of positions (issue 31) --------------
def generated_pairs(n: int, seed: int) -> list[dict]:
    """Preference pairs from `generated` MCQ rows: the answer chosen, another option
    rejected; a tenth of them in the validation split."""
    pairs = []
    for i, r in enumerate(generated(n, "p", seed)):
        wrong = next(o["text"] for o in r["options"] if o["text"] != r["answer"])
        pairs.append({"id": r["id"], "source": r["source"], "lang": r["lang"],
                      "task": r["task"], "split": "validation" if i % 10 == 0 else "train",
                      "prompt": [{"role": "user", "content": r["question"]}],
                      "chosen": [{"role": "assistant", "content": r["answer"]}],
                      "rejected": [{"role": "assistant", "content": wrong}],
                      "rejected_by": "distractor"})
    return pairs


def test_kto_from_a_preference_version_over_several_units_is_the_same_on_ray(
        local_ray, store, monkeypatch):
    """Unpairing runs in Ray tasks: the units scatter their rows into buckets of positions,
    a task per bucket sorts one and writes its shards; the same id as the local engine."""
    from meddata.builders import preference
    from meddata.engines import units
    from meddata.steps import seeded

    table = pa.Table.from_pylist(generated_pairs(20_000, 8), schema=preference.SCHEMA)
    pref = store.publish("preference", "pairs", preference.SCHEMA, table.to_batches(4096))
    monkeypatch.setattr(units, "unit_rows", lambda total: 7000)  # (on the driver, which plans)
    assert len(units.plan_units([pref])) == 3
    v = same(store, lambda engine, tag: pipeline.build(
        "kto", recipe_mod.from_dict({"from_ref": pref.ref, "name": f"kto-{tag}", "seed": 3}),
        store, progress=False, report=False, engine=engine))
    assert {p.name.split("-")[1] for p in v.shard_paths()} == {f"{b:05d}" for b in range(6)}
    assert v.manifest["stats"]["kto"] == {"desirable": 20_000, "undesirable": 20_000,
                                          "desirable_ratio": 0.5}
    split_of = dict(zip(table.column("id").to_pylist(), table.column("split").to_pylist()))
    order = []  # the seeded order of each label, interleaved
    for good, bad in zip(*(sorted((f"{i}#{label}" for i in split_of),
                                  key=lambda x: seeded(3, "kto", x))
                           for label in ("chosen", "rejected"))):
        order += [good, bad]
    got = v.to_table(columns=["id", "split"]).to_pylist()
    for split in ("train", "validation"):
        assert [r["id"] for r in got if r["split"] == split] == \
            [x for x in order if split_of[x.split("#")[0]] == split]


def test_an_exchange_before_a_step_on_the_driver_is_the_same_on_ray(local_ray, store):
    """Ray runs the exchange and the parallel step after it in tasks (per bucket), spills
    the buckets' rows and hands them to the driver in order; locally the driver sorts by
    position: the same rows in the same order, so the same id."""
    import numpy as np

    from conftest import toy_exchange_steps
    from meddata import runner
    from meddata.steps import key_hashes

    rows = generated(20_000, "x", 9)
    for r in rows[::7]:
        r["task"] = "open_qa"
    v = publish_rows(store, "toy", rows)
    same(store, lambda engine, tag: runner.publish(
        store, "canonical", f"toy-{tag}", CANONICAL, runner.read_versions([v]),
        toy_exchange_steps(), manifest={}, engine=engine))
    got = store.resolve("canonical/toy-ray").to_table(columns=["id", "split"]).to_pylist()
    assert len(got) == 20_000 - len(rows[::7])
    for split in ("train", "test"):  # (a shard per split)
        ids = [r["id"] for r in got if r["split"] == split]
        assert ids == [ids[i] for i in np.argsort(key_hashes(pa.array(ids)), kind="stable")]
