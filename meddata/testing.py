"""A tiny Qwen2-architecture model and tokenizer made offline, for tests and CPU benchmarks.

The tokenizer is a byte-level BPE trained here with the `tokenizers` library on a small
medical corpus, with Qwen2's own NFC normalizer and split regex (transformers 5 rebuilds a
Qwen2 tokenizer's pre-tokenizer from the model type, so anything else would change its ids
after a save and load) and a ChatML chat template. The model is a Qwen2 config with a few
small layers and random weights. Nothing here touches a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "The answer is A. The answer is B. The answer is C. The answer is D. The answer is E.",
    "Options: A. B. C. D. E. Answer with the letter of the correct option, then explain.",
    "Question: Context: yes no maybe. The answer is yes. The answer is no.",
    "<think> Let us reason step by step about the patient. </think>",
    "Vitamin C deficiency causes scurvy with bleeding gums and poor wound healing.",
    "Ethosuximide is the first-line drug for absence seizures in children.",
    "Hypertension is treated with ACE inhibitors, calcium channel blockers and diuretics.",
    "The patient presents with fever, headache and neck stiffness; meningitis is likely.",
    "答案是A。答案是B。答案是C。答案是D。选项：请给出正确选项的字母，并说明理由。",
    "气血两虚常见面色苍白、头晕目眩、神疲乏力。治疗宜气血双补，常用方剂如八珍汤。",
    "高血压患者应低盐饮食，规律服用降压药，定期监测血压。糖尿病患者应控制饮食。",
    "0 1 2 3 4 5 6 7 8 9 10 100 mg g/dL mmHg % ( ) , . ; : ? ! - / =",
]


def tiny_tokenizer(folder: str | Path, vocab_size: int = 600):
    """Train, save and return a byte-level BPE tokenizer with a ChatML template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None,
                                   unk_token=None, chat_template=CHATML)
    fast.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    config_path.write_text(json.dumps(config, indent=2))
    return AutoTokenizer.from_pretrained(folder)


SMOLLM2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>",
                    "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>"]


def byte_level_tokenizer(folder: str | Path, vocab_size: int = 800):
    """Train, save and return a byte-level BPE tokenizer laid out like SmolLM2's (GPT-2's
    byte-level pre-tokenizer and regex, no normalizer, its special tokens first, a ChatML
    template), for tests of what encodes text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SMOLLM2_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token="<|im_start|>",
                                   unk_token="<|endoftext|>", chat_template=CHATML)
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_model(folder: str | Path, tokenizer=None, hidden_size: int = 32, layers: int = 2,
               seed: int = 0, **config_overrides):
    """Save and return a random-weight Qwen2ForCausalLM sized for CPU tests."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    if tokenizer is None:
        tokenizer = tiny_tokenizer(folder)
    else:
        tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, **config_overrides)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # random weights favour no token in particular: keep the other special tokens out of
    # sampled text so generations decode to visible text
    model.generation_config.suppress_tokens = [
        tokenizer.convert_tokens_to_ids(t) for t in SPECIALS if t != tokenizer.eos_token]
    model.save_pretrained(folder)
    return model, tokenizer


def tiny_embedder(folder: str | Path) -> Path:
    """Save a sentence-transformers model (the tiny Qwen2 encoder, mean pooling) for dense
    retrieval tests; returns its folder."""
    from sentence_transformers import SentenceTransformer, models

    folder = Path(folder)
    tiny_model(folder / "encoder")
    word = models.Transformer(str(folder / "encoder"))
    pooling = models.Pooling(word.get_word_embedding_dimension(), "mean")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(folder / "embedder"))
    return folder / "embedder"
