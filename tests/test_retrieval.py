"""Retrieval indexes: chunking, BM25 and dense indexes published in the store, queries,
decontamination, retrieval in eval (--rag) and in builds (retrieve:)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from meddata import retrieval
from meddata.cli import cli
from meddata.schema import CANONICAL
from meddata.store import ShardIntegrityError

DOCS = [("Hypertension", "Hypertension is treated first with ACE inhibitors, calcium channel "
                         "blockers or thiazide diuretics, with lower salt intake.", "en"),
        ("Scurvy", "Scurvy is caused by a lack of vitamin C; it heals with ascorbic acid.", "en"),
        ("Asthma", "Asthma attacks are relieved by inhaled salbutamol, a short-acting beta "
                   "agonist.", "en"),
        ("糖尿病", "糖尿病是以慢性高血糖为特征的代谢性疾病，治疗包括饮食控制和二甲双胍。", "zh"),
        # an article whose title is a benchmark question (as PubMedQA's are)
        ("Does vitamin C deficiency explain scurvy in long-distance sailors?",
         "Sailors on long voyages without fresh fruit developed scurvy.", "en")]


def doc_row(i, title, body, lang, task="document"):
    return {"id": f"c/{i}", "source": "corpus", "subset": None, "split": "train", "lang": lang,
            "task": task, "question": title, "context": body, "options": None,
            "answer_label": None, "answer": None, "rationale": None, "response": None,
            "meta": "{}", "raw_sha1": f"{i:040d}", "turns": None}


def mcq_row(i, question, split="test"):
    opts = [{"label": "A", "text": "vitamin C"}, {"label": "B", "text": "vitamin D"}]
    return {"id": f"q/{i}", "source": "medqa", "subset": "us", "split": split, "lang": "en",
            "task": "mcq", "question": question, "context": None, "options": opts,
            "answer_label": "A", "answer": "vitamin C", "rationale": None, "response": None,
            "meta": "{}", "raw_sha1": f"{i:040d}", "turns": None}


def publish(store, name, rows):
    return store.publish("canonical", name, CANONICAL, [pa.Table.from_pylist(rows, CANONICAL)])


@pytest.fixture
def corpus(store):
    publish(store, "corpus", [doc_row(i, *d) for i, d in enumerate(DOCS)])
    return store


def run(store, *args):
    out = CliRunner().invoke(cli, ["--store", str(store.root), *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_windows_keep_the_text_and_overlap():
    text = " ".join(f"w{i}" for i in range(25))
    parts = retrieval.windows(text, 10, 3)
    assert [n for _, n in parts] == [10, 10, 10, 4]
    assert parts[0][0] == " ".join(f"w{i}" for i in range(10))
    assert parts[1][0].startswith("w7 w8 w9 w10")  # 3 tokens shared
    assert parts[-1][0].endswith("w24")
    zh = retrieval.windows("高血压患者应低盐饮食。", 4, 1)
    assert [t for t, _ in zh] == ["高血压患", "患者应低", "低盐饮食"]
    assert retrieval.windows("  ", 4, 1) == []


def test_bm25_index_in_the_store(corpus):
    run(corpus, "index", "build", "canonical/corpus", "--chunk-tokens", "12", "--overlap", "2")
    v = corpus.resolve("index/corpus")
    assert v.kind == "index" and v.rows > len(DOCS)  # long documents became several chunks
    chunk = next(s for s in v.manifest["stages"] if s["stage"] == "chunk")
    assert chunk["rows_in"] == len(DOCS) and chunk["chunks"] == v.rows
    assert {f["path"] for f in v.manifest["files"]} >= {"index/params.index.json",
                                                         "index/vocab.tokenizer.json"}
    v.verify("full")
    index = retrieval.Index(v)
    (top, *_), (zh, *_) = index.query(["what cures scurvy vitamin", "二甲双胍 高血糖"], 2)
    assert top.row["doc_id"] == "c/1" and top.row["title"] == "Scurvy"
    assert zh.row["doc_id"] == "c/3"  # Chinese indexed per character
    out = run(corpus, "index", "query", "index/corpus", "inhaled salbutamol", "--k", "1")
    assert "(document c/2)" in out and "score" in out
    # a chunk that shares no term with the query is no hit: fewer than k, never score 0
    (hits,) = index.query(["salbutamol"], 5)
    assert hits and len(hits) < 5 and all(h.score > 0 for h in hits)
    assert index.query(["xylophone"], 3) == [[]]
    # the index files are content: a changed file fails verification, and fsck finds it
    params = v.path / "index" / "params.index.json"
    params.chmod(0o644)
    params.write_text(params.read_text().replace("1.5", "1.2"))
    with pytest.raises(ShardIntegrityError):
        v.verify("full")
    from meddata.fsck import fsck

    assert any(p.kind == "bad_shard" for p in fsck(corpus))


def test_same_corpus_and_settings_give_the_same_index(corpus):
    a = retrieval.build(corpus, "canonical/corpus", retrieval.IndexSettings(), progress=False)
    b = retrieval.build(corpus, "canonical/corpus", retrieval.IndexSettings(), progress=False)
    c = retrieval.build(corpus, "canonical/corpus", retrieval.IndexSettings(k1=1.2),
                        progress=False)
    assert a.id == b.id and a.id != c.id


def test_decontaminated_index_and_the_eval_warning(corpus, tiny, tmp_path):
    leak = DOCS[4][0]
    publish(corpus, "bench", [mcq_row(0, leak), mcq_row(1, "Which drug relieves asthma?")])
    run(corpus, "index", "build", "canonical/corpus", "--name", "clean", "--decontam",
        "canonical/bench")
    run(corpus, "index", "build", "canonical/corpus", "--name", "raw")
    clean = corpus.resolve("index/clean")
    assert clean.manifest["stages"][0]["dropped"] == {"contaminated": 1}
    assert [p.get("role", "input") for p in clean.manifest["parents"]] == ["input", "benchmark"]
    out = CliRunner().invoke(cli, ["--store", str(corpus.root), "eval", "--model", tiny,
                                   "--bench", "canonical/bench", "--rag", "index/raw",
                                   "--rag", "index/clean", "--k", "2", "--rag-tokens", "40",
                                   "--quiet", "--out", str(tmp_path / "eval")])
    assert out.exit_code == 0, out.output
    assert "index/raw" in out.output and "was not decontaminated" in out.output
    assert "index/clean@" not in out.output.split("was not decontaminated")[0].splitlines()[-1]
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    labels = [m["model"] for m in report["models"]]
    assert labels[0] == tiny and len(labels) == 3 and "+ rag index/raw@" in labels[1]
    with_rag = report["models"][1]
    result = next(iter(with_rag["results"].values()))
    assert result["rag"]["k"] == 2 and result["rag"]["decontaminated"] is False
    assert next(iter(report["models"][2]["results"].values()))["rag"]["decontaminated"]
    items = [json.loads(line) for line in
             (tmp_path / "eval" / result["items_file"]).read_text().splitlines()]
    from meddata.evaluation.scorer import Scorer

    tok = Scorer(tiny).tokenizer
    for item in items:
        assert item["retrieved"] and item["prompt"].startswith("Relevant documents:\n[1] ")
        block, question = item["prompt"].split("\n\nQuestion: ")
        assert len(tok.encode(block + "\n\n", add_special_tokens=False)) <= 40
        assert question.endswith("Answer:")  # the question is whole


def test_passages_block_cuts_the_last_passage():
    hits = [retrieval.Hit(0, 1.0, {"id": "a#0", "title": "T", "text": "one two three four"}),
            retrieval.Hit(1, 0.5, {"id": "b#0", "title": "", "text": "five six seven"})]
    block, used = retrieval.passages_block(hits, "en", None)
    assert used == ["a#0", "b#0"] and "[2] five six seven" in block
    block, used = retrieval.passages_block(hits, "en", 6)
    # 6 tokens: 2 for the heading, 4 for "[1] T one two", and none for "…"
    assert used == ["a#0"] and block == "Relevant documents:\n[1] T\none two …\n\n"
    block, used = retrieval.passages_block(hits, "zh", None)
    assert block.startswith("参考资料：\n")


def test_build_with_retrieved_passages(corpus):
    publish(corpus, "train", [mcq_row(5, "Which vitamin deficiency causes scurvy?",
                                      split="train")])
    run(corpus, "index", "build", "canonical/corpus")
    run(corpus, "build", "sft", "canonical/train", "--retrieve", "index/corpus",
        "--retrieve-k", "1", "--name", "rag")
    v = corpus.resolve("sft/rag")
    user = v.to_table().to_pylist()[0]["messages"][0]["content"]
    assert user.startswith("Context:\nRelevant documents:\n[1] Scurvy")
    assert "Which vitamin deficiency causes scurvy?" in user
    assert v.manifest["parents"][-1]["role"] == "retrieval_index"
    assert v.manifest["retrieve"]["rows_with_passages"] == 1


def test_dense_index(corpus, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from meddata.testing import tiny_embedder

    model = tiny_embedder(tmp_path / "embed")
    run(corpus, "index", "build", "canonical/corpus", "--method", "dense", "--model",
        str(model), "--name", "dense")
    v = corpus.resolve("index/dense")
    assert [f["path"] for f in v.manifest["files"]] == ["index/vectors.faiss"]
    assert v.manifest["index"]["vectors"] == v.rows and v.manifest["index"]["model_sha256"]
    index = retrieval.Index(v)
    texts = [r["title"] + "\n" + r["text"] for r in v.to_table().to_pylist()]
    for i, hits in enumerate(index.query(texts, 3)):
        assert hits[0].position == i and hits[0].score == pytest.approx(1.0, abs=1e-4)
    bad = CliRunner().invoke(cli, ["--store", str(corpus.root), "index", "build",
                                   "canonical/corpus", "--method", "dense"])
    assert bad.exit_code != 0 and "needs --model" in bad.output


def test_index_of_the_bundled_corpus(store):
    run(store, "convert", "corpus", str(EXAMPLES / "corpus"), "--quiet")
    run(store, "index", "build", "canonical/corpus", "--quiet")
    (hits,) = retrieval.Index(store.resolve("index/corpus")).query(["高血压"], 3)
    assert hits and all(h.row["text"] for h in hits)
