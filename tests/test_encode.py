"""`llara encode` internals: streaming chunks, crash + resume, shards that merge, refusals."""

import json

import numpy as np
import pytest

from llara.errors import LlaraError
from llara.inference.corpus import encode_corpus_file, open_embeddings, parse_shard
from llara.inference.encoder import LlaraEncoder

N_DOCS = 70
CHUNK = 16


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, arxiv_tagged_dir):
    """The first 70 real arXiv papers, title + abstract (70 is not a multiple of the chunk size, on purpose)."""
    lines = (arxiv_tagged_dir / "corpus.jsonl").read_text().splitlines()[:N_DOCS]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return LlaraEncoder.from_pretrained(tiny_model_dir, recipe="reference", precision="fp32", passage_max_length=64)


@pytest.fixture(scope="module")
def full_run(encoder, corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    encode_corpus_file(encoder, corpus_file, out, chunk_size=CHUNK, show_progress_bar=False)
    emb = open_embeddings(out)
    return np.concatenate(list(emb.arrays())), emb.ids()


def test_chunks_cover_the_corpus_in_order(full_run, corpus_file, encoder, tmp_path):
    """Every document's passages, in corpus order, each row under its document's id (the tiny model's
    tokenizer makes every abstract longer than 64 tokens, so each is split)."""
    arrays, ids = full_run
    docs = [json.loads(line) for line in corpus_file.read_text().splitlines()]
    passages = encoder.prompts.passages(docs, 64)
    assert passages.long == N_DOCS and len(passages.texts) > 2 * N_DOCS
    assert arrays.shape == (len(passages.texts), encoder.dim) and arrays.dtype == np.float32
    assert ids == [docs[i]["_id"] for i in passages.owner]
    first, found = encoder.encode_documents(docs[:5])
    assert found.owner == passages.owner[: len(found.owner)]
    assert np.allclose(arrays[: len(first)], first, atol=1e-5)


def test_truncation_keeps_one_row_a_document_and_the_manifest_counts_both(encoder, corpus_file, tmp_path):
    cut = encode_corpus_file(
        encoder, corpus_file, tmp_path / "cut", chunk_size=CHUNK, show_progress_bar=False, long_documents="truncate"
    )
    emb = open_embeddings(tmp_path / "cut")
    assert emb.count == emb.documents == N_DOCS
    assert emb.ids() == [json.loads(line)["_id"] for line in corpus_file.read_text().splitlines()]
    assert cut["documents_read"] == {
        "long_documents": "truncate", "documents": N_DOCS, "documents_long": N_DOCS,
        "documents_long_share": 1.0, "passages": N_DOCS, "documents_folded": 0,
    }  # fmt: skip
    split = encode_corpus_file(encoder, corpus_file, tmp_path / "split", chunk_size=CHUNK, show_progress_bar=False)
    assert split["documents_read"]["passages"] == open_embeddings(tmp_path / "split").count > N_DOCS
    with pytest.raises(LlaraError, match="long_documents"):  # one folder, one way of reading documents
        encode_corpus_file(encoder, corpus_file, tmp_path / "cut", shard=(0, 1), resume=True, show_progress_bar=False)


def test_resume_after_a_crash_gives_exactly_the_uninterrupted_embeddings(
    full_run, tiny_model_dir, corpus_file, tmp_path, monkeypatch
):
    out = tmp_path / "emb"
    crashing = LlaraEncoder.from_pretrained(tiny_model_dir, recipe="reference", precision="fp32", passage_max_length=64)
    calls = {"n": 0}
    real = crashing.encode_documents

    def encode_then_crash(*args, **kwargs):
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(crashing, "encode_documents", encode_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_corpus_file(crashing, corpus_file, out, chunk_size=CHUNK, show_progress_bar=False)
    assert len(list(out.glob("*.npy"))) == 2 and not list(out.glob(".*tmp"))
    with pytest.raises(LlaraError, match="unfinished"):
        open_embeddings(out)
    with pytest.raises(LlaraError, match="--resume"):
        encode_corpus_file(crashing, corpus_file, out, chunk_size=CHUNK, show_progress_bar=False)

    # a new process: the model is loaded again from disk
    fresh = LlaraEncoder.from_pretrained(tiny_model_dir, recipe="reference", precision="fp32", passage_max_length=64)
    manifest = encode_corpus_file(fresh, corpus_file, out, resume=True, chunk_size=CHUNK, show_progress_bar=False)
    assert manifest["encoded_now"] == N_DOCS - 2 * CHUNK  # only the missing chunks
    emb = open_embeddings(out)
    # the same rows in the same order; values to float rounding (CPU kernels may sum in another order)
    got = np.concatenate(list(emb.arrays()))
    d = np.abs(got - full_run[0]).max(1)
    print("DIFFROWS", np.nonzero(d)[0][:50], d.max(), len(np.nonzero(d)[0]))
    assert np.allclose(got, full_run[0], atol=1e-6, rtol=0)
    assert emb.ids() == full_run[1]


def test_shards_merge_into_the_single_run(full_run, encoder, corpus_file, tmp_path):
    out = tmp_path / "sharded"
    for i in (2, 0, 1):  # any order, as independent processes would finish
        encode_corpus_file(encoder, corpus_file, out, shard=(i, 3), chunk_size=CHUNK, show_progress_bar=False)
    emb = open_embeddings(out)
    assert emb.ids() == full_run[1]
    assert np.allclose(np.concatenate(list(emb.arrays())), full_run[0], atol=1e-5)


def test_missing_shard_and_mixed_settings_are_refused(encoder, corpus_file, tmp_path):
    out = tmp_path / "part"
    encode_corpus_file(encoder, corpus_file, out, shard=(0, 2), chunk_size=CHUNK, show_progress_bar=False)
    with pytest.raises(LlaraError, match=r"missing"):
        open_embeddings(out)
    with pytest.raises(LlaraError, match="dtype"):
        encode_corpus_file(encoder, corpus_file, out, shard=(1, 2), dtype="float16", show_progress_bar=False)
    with pytest.raises(LlaraError, match="shards"):
        encode_corpus_file(encoder, corpus_file, out, shard=(1, 3), chunk_size=CHUNK, show_progress_bar=False)


def test_float16_storage_is_close_to_float32(full_run, encoder, corpus_file, tmp_path):
    encode_corpus_file(encoder, corpus_file, tmp_path / "h", dtype="float16", chunk_size=64, show_progress_bar=False)
    arrays = np.concatenate(list(open_embeddings(tmp_path / "h").arrays()))
    assert arrays.dtype == np.float16
    cos = (arrays.astype(np.float32) * full_run[0]).sum(1)
    assert cos.min() > 0.999


def test_bad_corpus_is_refused_before_anything_is_written(encoder, tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(LlaraError, match="duplicate") as e:
        encode_corpus_file(encoder, bad, tmp_path / "out", show_progress_bar=False)
    assert e.value.line == 2 and not (tmp_path / "out").exists()
    bad.write_text('{"_id": "a b", "text": "x"}\n')
    with pytest.raises(LlaraError, match="whitespace"):
        encode_corpus_file(encoder, bad, tmp_path / "out", show_progress_bar=False)


def test_shard_spec_and_torchrun_env(monkeypatch):
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(LlaraError):
            parse_shard(bad)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert parse_shard(None) == (1, 2)
