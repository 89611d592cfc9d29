"""Shared fixtures: tiny random LLaMA-family models built in code, real data from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CISI = ROOT.parent / "shared" / "data" / "cisi"

WORDS = (
    "the a of to and in is for on with as by retrieval dense passage query document search index model "
    "language large embedding vector library information science system user data text token next "
    "summarize predict words eight above following sentence original what how why classification"
).split()


def make_tokenizer(folder: Path):
    """A small byte-level BPE tokenizer trained in code (no hub), with eos/pad like a LLaMA chat model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] + ['", ": <>']
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|eos|>"
    )
    fast.save_pretrained(folder)
    return fast


def make_tiny_model(folder: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A random 2-layer causal LM of the given family, saved as an HF folder with safetensors."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(folder)
    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[arch]
    config = cls(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def cisi_dir() -> Path:
    if not (CISI / "corpus.jsonl").is_file():
        pytest.fail(f"real test data missing: {CISI} (the project's ../shared/data)")
    return CISI


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> Path:
    """Write a small BEIR folder; rows are written verbatim so tests can plant bad input."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return folder


@pytest.fixture
def cisi_subset(tmp_path, cisi_dir) -> Path:
    """The first 40 CISI queries' judged documents plus 200 others: real text, small enough to encode."""
    corpus = [json.loads(line) for line in (cisi_dir / "corpus.jsonl").open()]
    queries = [json.loads(line) for line in (cisi_dir / "queries.jsonl").open()][:10]
    qids = {q["_id"] for q in queries}
    rows = [line.rstrip("\n").split("\t") for line in (cisi_dir / "qrels" / "test.tsv").open()][1:]
    rows = [(q, d, int(s)) for q, d, s in rows if q in qids]
    judged = {d for _, d, _ in rows}
    keep = [c for c in corpus if c["_id"] in judged] + [c for c in corpus if c["_id"] not in judged][:100]
    return write_beir(tmp_path / "cisi-small", keep, queries, rows)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Each test session converts the built-in model into its own cache, as a fresh machine would."""
    import os

    old = os.environ.get("LLARA_CACHE")
    os.environ["LLARA_CACHE"] = str(tmp_path_factory.mktemp("llara-cache"))
    yield
    if old is None:
        os.environ.pop("LLARA_CACHE", None)
    else:
        os.environ["LLARA_CACHE"] = old


@pytest.fixture(scope="session")
def smollm2_dir(isolated_cache) -> Path:
    from llara.models import resolve_model

    return resolve_model("smollm2")


def run_cli(*args: str, timeout: int = 900):
    """Run `python -m llara ...` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "llara", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
