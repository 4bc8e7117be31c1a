"""Retrieval indexes over a canonical corpus, published in the store as the kind `index`,
and retrieval for evaluation (`meddata eval --rag`) and for builds (`retrieve:`).

    meddata index build canonical/corpus [--method bm25|dense] [--name N] [--decontam REF]
    meddata index query index/corpus "hypertension first-line drug" [--k 5]

An index version is a version like any other (atomic publish, content-addressed id,
integrity checks, lineage): its rows are the chunks (id, doc_id, source, lang, title, text,
chunk number, tokens), and its files (under index/) are the search structure, hashed into
the id with the shards. The steps, each counted in the manifest's ledger:

1. decontam (optional): rows matching benchmark items are dropped with the existing
   decontamination step, and the benchmarks are recorded as parents;
2. chunk: a document's text (title, then body; for other rows question, then context) is
   cut into windows of `chunk_tokens` tokens overlapping by `overlap` (tokens are
   meddata's: words, and every CJK character);
3. index: BM25 (bm25s) over the chunks, or dense vectors (sentence-transformers) in a
   faiss index.

BM25 is bm25s (a maintained, numpy/scipy BM25 that saves its index as arrays), fed with
meddata's tokenizer so that Chinese is indexed per character and English per lower-cased
word, English stop words removed and English words stemmed (PyStemmer's Snowball) unless
`stemmer: none`. Dense retrieval embeds with a local sentence-transformers model folder and
searches a faiss inner-product index of normalized vectors (exact cosine): faiss runs in
process, saves to one file, and is what MedRAG's retrievers use; LanceDB and Chroma bring a
database where a file is enough.
"""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import regex

from meddata.steps import Books, Step
from meddata.store import Store, Version
from meddata.text import TOKEN_PATTERN, tokens

KIND = "index"
CHUNKS = pa.schema([
    pa.field("id", pa.string()), pa.field("doc_id", pa.string()),
    pa.field("source", pa.string()), pa.field("lang", pa.string()),
    pa.field("task", pa.string()), pa.field("split", pa.string()),
    pa.field("title", pa.string()), pa.field("text", pa.string()),
    pa.field("chunk", pa.int32()), pa.field("tokens", pa.int32()),
])
METHODS = ("bm25", "dense")
_TOKEN = regex.compile(TOKEN_PATTERN)
PASSAGES_HEAD = {"en": "Relevant documents:", "zh": "参考资料："}


@dataclass
class IndexSettings:
    method: str = "bm25"
    chunk_tokens: int = 256
    overlap: int = 32
    k1: float = 1.5                 # bm25
    b: float = 0.75
    bm25_variant: str = "lucene"    # bm25s's `method`
    stopwords: str = "en"           # "en" or "none"
    stemmer: str = "english"        # PyStemmer language, or "none"
    model: str | None = None        # dense: a local sentence-transformers folder
    batch_size: int = 64            # dense: texts per encode call

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"index method must be one of {', '.join(METHODS)}")
        if self.chunk_tokens < 8 or not 0 <= self.overlap < self.chunk_tokens:
            raise ValueError("chunk_tokens must be at least 8 and overlap in [0, chunk_tokens)")
        if self.method == "dense" and not self.model:
            raise ValueError("a dense index needs --model: a local sentence-transformers folder")
        if self.model and not Path(self.model).is_dir():
            raise ValueError(f"--model {self.model}: not a folder (dense indexes load "
                             "embedding models from local folders only)")


# ---- chunking -----------------------------------------------------------------------------------
def document_parts(row: dict[str, Any]) -> tuple[str, str]:
    """(title, body) of a canonical row: a document's title and text, else its question and
    context (the answer is never indexed)."""
    if row.get("task") == "document":
        return row.get("question") or "", row.get("context") or ""
    return "", "\n".join(x for x in (row.get("question"), row.get("context")) if x)


def windows(text: str, size: int, overlap: int) -> list[tuple[str, int]]:
    """(chunk text, tokens) windows of `size` tokens overlapping by `overlap`; a chunk is the
    original text from its first token's start to its last token's end."""
    spans = [m.span() for m in _TOKEN.finditer(text)]
    if len(spans) <= size:
        return [(text.strip(), len(spans))] if spans else []
    out, step = [], size - overlap
    for start in range(0, len(spans), step):
        window = spans[start:start + size]
        out.append((text[window[0][0]:window[-1][1]], len(window)))
        if start + size >= len(spans):
            break
    return out


class Chunk(Step):
    """Canonical rows in, chunks (CHUNKS) out; rows without text are dropped."""

    name = "chunk"
    needs = ("id", "source", "lang", "task", "question", "context")
    adds = tuple(CHUNKS.names)

    def __init__(self, settings: IndexSettings):
        self.settings = settings
        self.documents = self.chunks = self.split_documents = 0

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        self.check_columns(batch)
        out: dict[str, list] = {name: [] for name in CHUNKS.names}
        empty = []
        for row in batch.select(list(self.needs)).to_pylist():
            title, body = document_parts(row)
            parts = windows(body, self.settings.chunk_tokens, self.settings.overlap)
            if not parts:
                empty.append(row)
                continue
            self.documents += 1
            self.split_documents += len(parts) > 1
            for k, (text, n) in enumerate(parts):
                for name, value in (("id", f"{row['id']}#{k}"), ("doc_id", row["id"]),
                                    ("source", row["source"]), ("lang", row["lang"]),
                                    ("task", row["task"]), ("split", "train"),
                                    ("title", title), ("text", text), ("chunk", k),
                                    ("tokens", n)):
                    out[name].append(value)
        if empty:
            books.drop("no_text", rows=empty)
        books.count_out = False  # rows out are documents; the chunks they became are info
        books.rows_out += batch.num_rows - len(empty)
        books.info["chunks"] = books.info.get("chunks", 0) + len(out["id"])
        self.chunks += len(out["id"])
        return pa.RecordBatch.from_pydict(out, schema=CHUNKS) if out["id"] else None

    def report(self) -> dict[str, Any]:
        return {"documents": self.documents, "chunks": self.chunks,
                "documents_split": self.split_documents,
                "chunk_tokens": self.settings.chunk_tokens, "overlap": self.settings.overlap}


def _passage_text(title: str | None, text: str) -> str:
    return f"{title}\n{text}" if title else text


# ---- the search structures ----------------------------------------------------------------------
def _bm25_tokenizer(settings: IndexSettings):
    import bm25s

    stemmer = None
    if settings.stemmer != "none":
        import Stemmer

        stemmer = Stemmer.Stemmer(settings.stemmer)
    return bm25s.tokenization.Tokenizer(
        lower=False, splitter=tokens, stemmer=stemmer,
        stopwords=None if settings.stopwords == "none" else settings.stopwords)


class Bm25Index(Step):
    """Passes chunks through, keeping each one's token ids (4 bytes a token); then bm25s
    indexes them and saves its arrays."""

    name = "index"
    needs = ("title", "text")

    def __init__(self, settings: IndexSettings):
        self.settings = settings
        self.tokenizer = _bm25_tokenizer(settings)
        self.ids: list[array] = []

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        texts = [_passage_text(t, x) for t, x in zip(batch.column("title").to_pylist(),
                                                     batch.column("text").to_pylist())]
        for ids in self.tokenizer.streaming_tokenize(texts, update_vocab=True):
            self.ids.append(array("i", ids))
        return batch

    def save(self, folder: Path) -> None:
        import bm25s

        if not self.ids:
            raise ValueError("nothing to index: the corpus has no text")
        s = self.settings
        retriever = bm25s.BM25(k1=s.k1, b=s.b, method=s.bm25_variant)
        retriever.index(bm25s.tokenization.Tokenized(ids=self.ids,
                                                     vocab=self.tokenizer.get_vocab_dict()),
                        show_progress=False)
        retriever.save(str(folder))
        self.tokenizer.save_vocab(str(folder))
        self.tokenizer.save_stopwords(str(folder))
        self.ids = []

    def report(self) -> dict[str, Any]:
        return {"vocabulary": len(self.tokenizer.get_vocab_dict())}


def _folder_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _embedder(model: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model, device="cpu", local_files_only=True)


class DenseIndex(Step):
    """Passes chunks through, adding each batch's normalized embeddings to a faiss
    inner-product index (held in memory: 4 bytes per dimension per chunk)."""

    name = "index"
    needs = ("title", "text")

    def __init__(self, settings: IndexSettings):
        import faiss

        self.settings = settings
        self.model = _embedder(settings.model)
        self.dim = self.model.get_sentence_embedding_dimension()
        self.index = faiss.IndexFlatIP(self.dim)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        texts = [_passage_text(t, x) for t, x in zip(batch.column("title").to_pylist(),
                                                     batch.column("text").to_pylist())]
        vectors = self.model.encode(texts, batch_size=self.settings.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return batch

    def save(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(folder / "vectors.faiss"))

    def report(self) -> dict[str, Any]:
        return {"vectors": int(self.index.ntotal), "dimensions": self.dim,
                "model": self.settings.model,
                "model_sha256": _folder_sha256(Path(self.settings.model))}


def build(store: Store, ref: str, settings: IndexSettings, name: str | None = None,
          benchmarks: list[str] = (), progress: bool = True) -> Version:
    """Publish index/<name> over a canonical version's rows."""
    from meddata import runner
    from meddata.engines.local import LocalEngine
    from meddata.steps.decontam import DecontamConfig, DecontamStep

    settings.check()
    corpus = store.resolve(ref)
    if corpus.kind != "canonical":
        raise ValueError(f"{corpus.ref}: an index is built over a canonical version")
    benches = [store.resolve(b) for b in benchmarks]
    index = Bm25Index(settings) if settings.method == "bm25" else DenseIndex(settings)
    steps = ([DecontamStep(benches, DecontamConfig())] if benches else []) + \
        [Chunk(settings), index]
    parents = [corpus.as_parent()] + [b.as_parent(role="benchmark") for b in benches]

    def attach(pub) -> None:
        with tempfile.TemporaryDirectory(dir=store.root / ".tmp") as tmp:
            folder = Path(tmp)
            index.save(folder)
            for f in sorted(p for p in folder.rglob("*") if p.is_file()):
                pub.add_file(f"index/{f.relative_to(folder)}", f)

    read = runner.with_progress(runner.read_versions([corpus]), f"index {corpus.name}",
                                corpus.rows, progress)
    (store.root / ".tmp").mkdir(parents=True, exist_ok=True)
    return runner.publish(store, KIND, name or corpus.name, CHUNKS, read, steps,
                          manifest={"inputs": [{"ref": corpus.ref}], "parents": parents,
                                    "recipe": {"index": asdict(settings), "corpus": corpus.ref,
                                               "decontam": [b.ref for b in benches]}},
                          engine=LocalEngine(), attach=attach)


# ---- searching ---------------------------------------------------------------------------------------
@dataclass
class Hit:
    position: int
    score: float
    row: dict[str, Any] = field(default_factory=dict)


class Index:
    """A published index, loaded for search (its shards and files checked by size)."""

    def __init__(self, version: Version):
        if version.kind != KIND:
            raise ValueError(f"{version.ref} is not an index (build one with "
                             "`meddata index build`)")
        version.verify("size")
        self.version = version
        self.settings = IndexSettings(**version.manifest["recipe"]["index"])
        self.folder = version.path / "index"
        self.benchmarks = set(version.manifest["recipe"].get("decontam") or [])
        if self.settings.method == "bm25":
            import bm25s

            self.retriever = bm25s.BM25.load(str(self.folder), load_corpus=False)
            self.tokenizer = _bm25_tokenizer(self.settings)
            self.tokenizer.load_vocab(str(self.folder))
            self.tokenizer.load_stopwords(str(self.folder))
        else:
            import faiss

            self.index = faiss.read_index(str(self.folder / "vectors.faiss"))
            self.model = _embedder(self.settings.model)
        self._dataset = None

    @property
    def rows(self) -> int:
        return self.version.rows

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """The top-k chunks of each query, best first (positions and scores); with BM25,
        only chunks that share a term with the query."""
        k = min(k, self.rows)
        if not queries or k == 0:
            return [[] for _ in queries]
        if self.settings.method == "bm25":
            ids = self.tokenizer.tokenize(queries, update_vocab=False, return_as="ids",
                                          show_progress=False)
            docs, scores = self.retriever.retrieve(ids, k=k, show_progress=False)
        else:
            vectors = self.model.encode(queries, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
            scores, docs = self.index.search(np.ascontiguousarray(vectors, np.float32), k)
        # BM25 scores 0 when no query term is in the chunk: such a chunk is no hit (bm25s
        # fills k slots regardless), so a query with few matches gets fewer than k hits
        floor = 0.0 if self.settings.method == "bm25" else float("-inf")
        return [[Hit(int(d), float(s)) for d, s in zip(drow, srow) if d >= 0 and s > floor]
                for drow, srow in zip(docs, scores)]

    def fetch(self, hits: list[list[Hit]]) -> list[list[Hit]]:
        """Fill each hit's chunk row (reading only the row groups that hold them)."""
        import pyarrow.dataset as ds

        if self._dataset is None:
            self._dataset = ds.dataset([str(p) for p in self.version.shard_paths()],
                                       format="parquet")
        wanted = sorted({h.position for row in hits for h in row})
        if wanted:
            table = self._dataset.take(pa.array(wanted, pa.int64()))
            by_position = dict(zip(wanted, table.to_pylist()))
            for row in hits:
                for h in row:
                    h.row = by_position[h.position]
        return hits

    def query(self, queries: list[str], k: int) -> list[list[Hit]]:
        return self.fetch(self.search(queries, k))


def query_text(row: dict[str, Any]) -> str:
    """What a canonical row is retrieved with: its question, and its options' texts."""
    options = " ".join(o["text"] for o in row.get("options") or [])
    return " ".join(x for x in (row.get("question"), options) if x)


def passages_block(hits: list[Hit], lang: str | None, budget: int | None = None,
                   count=None) -> tuple[str, list[str]]:
    """The passages in a fixed template ("Relevant documents:" / "参考资料：", then "[i]
    title\ntext" each, then a blank line) within `budget` tokens as `count(text)` counts the
    whole block (the last passage that fits is cut at a word, later ones left out); and the
    ids of the chunks used."""
    head = PASSAGES_HEAD.get(lang or "en", PASSAGES_HEAD["en"])
    count = count or (lambda text: len(_TOKEN.findall(text)))

    def block(parts: list[str]) -> str:
        return head + "\n" + "\n".join(parts) + "\n\n"

    parts: list[str] = []
    used: list[str] = []
    for i, h in enumerate(hits, 1):
        text = f"[{i}] {_passage_text(h.row.get('title'), h.row.get('text') or '')}"
        if budget is None or count(block([*parts, text])) <= budget:
            parts.append(text)
            used.append(h.row.get("id"))
            continue
        ends = [m.end() for m in _TOKEN.finditer(text)]
        lo, hi = 0, len(ends) - 1  # the most words of this passage that still fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(block([*parts, text[:ends[mid - 1]] + " …"])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo > 1:  # more than its number
            parts.append(text[:ends[lo - 1]] + " …")
            used.append(h.row.get("id"))
        break
    return (block(parts), used) if parts else ("", [])


def describe(version: Version) -> dict[str, Any]:
    m = version.manifest
    return {"index": version.ref, "method": m["recipe"]["index"]["method"],
            "chunks": m["rows"], "corpus": m["recipe"]["corpus"],
            "decontaminated_against": m["recipe"].get("decontam") or []}
