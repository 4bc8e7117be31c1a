"""meddata.encoder: the fast tokenizer backend gives the tokenizers library's ids or is not
used; the backend never changes a version id."""

from __future__ import annotations

import pickle
import sys

import pytest
from click.testing import CliRunner

from meddata import encoder as enc
from meddata import recipe as recipe_mod
from meddata.builders import pipeline
from meddata.cli import cli


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    """The tests' tiny Qwen2-style tokenizer and a byte-level BPE laid out like SmolLM2's."""
    from meddata.testing import byte_level_tokenizer, tiny_tokenizer

    qwen, smol = tmp_path_factory.mktemp("qwen"), tmp_path_factory.mktemp("smol")
    tiny_tokenizer(qwen)
    byte_level_tokenizer(smol)
    return {"qwen2-like": str(qwen), "smollm2-like": str(smol)}


def loaded(path):
    from meddata.length import load_tokenizer

    return load_tokenizer(path)


class Wrong:
    """A fastokens tokenizer that gives one wrong id on texts containing `trigger`."""

    def __init__(self, real, trigger: str):
        self.real, self.trigger = real, trigger

    def _bend(self, text, ids):
        return [ids[0] + 1, *ids[1:]] if self.trigger in text and ids else ids

    def encode_batch(self, texts, add_special_tokens=False):
        out = self.real.encode_batch(texts, add_special_tokens=add_special_tokens)
        return [type("E", (), {"ids": self._bend(t, e.ids)})() for t, e in zip(texts, out)]

    def encode_batch_flat(self, texts, add_special_tokens=False):
        import numpy as np

        lists = [e.ids for e in self.encode_batch(texts, add_special_tokens)]
        offsets = np.zeros(len(lists) + 1, np.uint64)
        np.cumsum([len(x) for x in lists], out=offsets[1:])
        return (np.array([i for x in lists for i in x], np.uint32).tobytes(),
                offsets.tobytes())


def bend(monkeypatch, trigger):
    fastokens = pytest.importorskip("fastokens")
    real = fastokens.Tokenizer.from_json_str
    monkeypatch.setattr(fastokens.Tokenizer, "from_json_str",
                        staticmethod(lambda s, **kw: Wrong(real(s, **kw), trigger)))


@pytest.mark.parametrize("which", ["qwen2-like", "smollm2-like"])
def test_fast_backend_passes_the_probes_and_gives_the_same_ids(toks, which):
    pytest.importorskip("fastokens")
    tok = loaded(toks[which])
    fast, hf = enc.Encoder(tok, "auto"), enc.Encoder(tok, "hf")
    assert fast.backend == "fast" and "probes identical" in fast.reason
    assert hf.backend == "hf"
    texts = [*enc.probes(tok.backend_tokenizer).values(), "病人发热 fever 🤒 " * 50] * 3
    assert fast.encode(texts) == hf.encode(texts) == [
        tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    values, offsets = fast.encode_flat(texts)
    assert values.dtype.name == "int32" and len(offsets) == len(texts) + 1


def test_the_probes_cover_every_added_token_in_context(toks):
    tok = loaded(toks["smollm2-like"])
    texts = enc.probes(tok.backend_tokenizer)
    for token in ("<|im_start|>", "<|im_end|>", "<repo_name>"):
        assert any(token in t for name, t in texts.items() if name.startswith("added_token"))
    for name in ("chinese", "japanese", "emoji", "rare_unicode", "digits", "whitespace",
                 "code", "normalizer_pairs", "english"):
        assert name in texts and texts[name] in texts["all_joined"]


def test_a_difference_on_one_probe_means_hf_with_the_reason(toks, monkeypatch):
    bend(monkeypatch, "🤒")
    tok = loaded(toks["qwen2-like"])
    auto = enc.Encoder(tok, "auto")
    assert auto.backend == "hf" and "probe 'emoji'" in auto.reason
    assert auto.describe()["reason"] == auto.reason and "fastokens" not in auto.line()[:30]
    with pytest.raises(enc.BackendError, match="probe 'emoji'.*--tokenizer-backend hf"):
        enc.Encoder(tok, "fast")


def test_a_tokenizer_fastokens_cannot_load_falls_back(tmp_path):
    pytest.importorskip("fastokens")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from meddata.testing import CORPUS

    t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    t.normalizer = normalizers.BertNormalizer(lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.train_from_iterator(CORPUS, trainer=trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[UNK]"], show_progress=False))
    holder = type("Tok", (), {"backend_tokenizer": t})()
    auto = enc.Encoder(holder, "auto")
    assert auto.backend == "hf" and auto.reason.startswith("fastokens cannot load")
    assert auto.encode(["Vitamin C"]) == [t.encode("Vitamin C", add_special_tokens=False).ids]
    with pytest.raises(enc.BackendError, match="cannot load"):
        enc.Encoder(holder, "fast")


def test_without_fastokens_auto_is_hf_and_says_so(toks, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastokens", None)  # import fails
    auto = enc.Encoder(loaded(toks["qwen2-like"]), None)
    assert auto.backend == "hf" and "not installed" in auto.reason


def test_the_sample_of_the_builds_rows_stops_on_a_difference(toks, monkeypatch):
    bend(monkeypatch, "ROW-2000-BENT")
    tok = loaded(toks["qwen2-like"])
    e = enc.Encoder(tok, "auto")
    assert e.backend == "fast"  # no probe contains the trigger
    e.encode_flat([f"row {i}" for i in range(1500)])
    assert e.sampled == 2  # rows 0 and 1000
    batch = [f"row {i}" for i in range(1500, 2500)]
    batch[500] = "ROW-2000-BENT"  # row 2000 of this encoder: sampled
    with pytest.raises(enc.TokenizerMismatch, match="row 2000 .*differ at token 0"):
        e.encode_flat(batch)
    clean = [f"row {i}" for i in range(1000)]
    clean[999] = "ROW-2000-BENT"  # not a sampled row: not seen (a sample, not a proof)
    enc.Encoder(tok, "auto").encode_flat(clean)


def test_a_build_stops_on_a_sampled_difference(toks, monkeypatch, tmp_path):
    import pyarrow as pa

    from meddata.builders import pretrain
    from meddata.engines.local import chain as run
    from meddata.length import Measure
    from meddata.steps import Ledger
    from meddata.steps.length import IDS, Length

    bend(monkeypatch, "BENT")
    texts = [f"document {i}" for i in range(3000)]
    texts[1000] = "a BENT document"
    measure = Measure(toks["qwen2-like"], backend="auto")
    step = Length(pretrain.KIND, measure, None, drop=False, ids=True)
    with pytest.raises(enc.TokenizerMismatch, match="row 1000"):
        list(run(lambda replay: iter(pa.table({"text": texts}).to_batches(max_chunksize=700)),
                 [step], Ledger(), tmp_path))
    assert IDS  # the step's output column


def test_unknown_backends_are_refused_by_name(monkeypatch, toks):
    with pytest.raises(enc.BackendError, match="'gpu'.*auto, fast, hf"):
        enc.requested("gpu")
    monkeypatch.setenv(enc.ENV, "rust")
    with pytest.raises(enc.BackendError, match="MEDDATA_TOKENIZER_BACKEND.*'rust'"):
        enc.requested(None)
    with pytest.raises(recipe_mod.RecipeError, match="tokenizer_backend"):
        recipe_mod.from_dict({**pipeline.examples_recipe().to_dict(),
                              "tokenizer_backend": "gpu"})


def test_the_environment_chooses_when_nothing_else_does(monkeypatch, toks):
    monkeypatch.setenv(enc.ENV, "hf")
    assert enc.Encoder(loaded(toks["qwen2-like"])).backend == "hf"
    assert enc.Encoder(loaded(toks["qwen2-like"]), "auto").requested == "auto"


def test_the_encoder_travels_to_workers(toks):
    pytest.importorskip("fastokens")
    e = enc.Encoder(loaded(toks["smollm2-like"]), "fast")
    again = pickle.loads(pickle.dumps(e))
    assert again.backend == "fast" and again.encode(["气血 fever"]) == e.encode(["气血 fever"])


@pytest.mark.parametrize("which", ["qwen2-like", "smollm2-like"])
def test_the_same_build_on_both_backends_publishes_the_same_id(toks, which, tmp_path):
    pytest.importorskip("fastokens")
    from meddata.store import Store

    def build(kind, backend, **more):
        data = pipeline.examples_recipe().to_dict()
        data.update(tokenizer=toks[which], tokenizer_backend=backend, **more)
        store = Store(tmp_path / f"{kind}-{backend}")
        return pipeline.build(kind, recipe_mod.from_dict(data), store, progress=False,
                            report=False)

    for kind, more in (("pretrain", {"pack": True, "max_tokens": 64}),
                       ("sft", {"max_tokens": 120})):
        hf, fast = build(kind, "hf", **more), build(kind, "fast", **more)
        assert hf.id == fast.id
        assert hf.manifest["stats"]["tokenizer"]["encoder"]["backend"] == "hf"
        described = fast.manifest["stats"]["tokenizer"]["encoder"]
        assert described["backend"] == "fast" and described["library"].startswith("fastokens")


def test_the_build_command_takes_the_backend_and_prints_it(toks, tmp_path):
    r = CliRunner().invoke(cli, ["--store", str(tmp_path / "s"), "build", "sft", "--quiet",
                                 "--tokenizer", toks["qwen2-like"], "--tokenizer-backend", "hf",
                                 "--no-report"])
    assert r.exit_code == 0, r.output
    assert "tokenizer backend: hf (asked for (--tokenizer-backend hf))" in r.output
    bad = CliRunner().invoke(cli, ["build", "sft", "--tokenizer-backend", "gpu"])
    assert bad.exit_code == 2 and "'gpu' is not one of 'auto', 'fast', 'hf'" in bad.output
