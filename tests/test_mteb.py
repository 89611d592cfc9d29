"""LlaraEncoder under MTEB's own evaluation loop, offline, on the arXiv set shipped in `cherche`."""

import socket

import numpy as np
import pytest

from llara.data.arxiv import write_arxiv_beir
from llara.data.beir import load_beir
from llara.evaluation import evaluate_dense
from llara.inference.encoder import LlaraEncoder
from llara.integrations.mteb import beir_retrieval_task
from tests.conftest import write_beir

mteb = pytest.importorskip("mteb")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network at all: hub libraries told so, and any socket connection fails the test."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("MTEB_CACHE", str(tmp_path / "mteb-cache"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32", passage_max_length=128)


@pytest.fixture(scope="module")
def arxiv(tmp_path_factory):
    """The first 120 papers of the shipped arXiv set (titles -> abstracts), to keep the test quick."""
    full = load_beir(write_arxiv_beir(tmp_path_factory.mktemp("arxiv") / "arxiv"))
    ids = list(full.queries)[:120]
    corpus = [{"_id": i, "title": "", "text": full.corpus[i]["text"]} for i in ids]
    queries = [{"_id": i, "text": full.queries[i]} for i in ids]
    return write_beir(tmp_path_factory.mktemp("arxiv") / "arxiv-120", corpus, queries, [(i, i, 1) for i in ids])


def test_encoder_satisfies_the_protocol_and_maps_prompt_types(encoder):
    from mteb.models.models_protocols import EncoderProtocol
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

    assert isinstance(encoder, EncoderProtocol)
    texts = ["what is dense retrieval", "a library information system", "eight words"]
    batches = DataLoader([{"text": t} for t in texts], batch_size=2)  # MTEB's {"text": [...]} batches
    q = encoder.encode(batches, task_metadata=None, hf_split="test", hf_subset="default", prompt_type=PromptType.query)
    d = encoder.encode(
        batches, task_metadata=None, hf_split="test", hf_subset="default", prompt_type=PromptType.document
    )
    assert np.allclose(q, encoder.encode_queries(texts), atol=1e-6)
    assert np.allclose(d, encoder.encode_corpus(texts), atol=1e-6)
    assert np.allclose(encoder.similarity(q, d).numpy(), q @ d.T, atol=1e-6)
    assert encoder.mteb_model_meta.embed_dim == encoder.dim


def test_mteb_retrieval_task_offline_matches_llara_evaluation(encoder, arxiv, offline):
    task = beir_retrieval_task(arxiv, name="ArxivTitleAbstract")
    result = mteb.evaluate(encoder, task, cache=None, encode_kwargs={"batch_size": 32}, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    # MTEB embeds a document as one text, cut at the passage length: llara's evaluation when it truncates
    # (by default llara splits long documents into passages)
    ours = evaluate_dense(encoder, load_beir(arxiv), k=1000, show_progress_bar=False, long_documents="truncate").metrics
    # Same embeddings, same qrels: MTEB's pytrec_eval agrees with llara's ir-measures. A swapped
    # query/passage prompt would change the ranking and break this.
    assert scores["ndcg_at_10"] == pytest.approx(ours["nDCG@10"], abs=1e-4)
    assert scores["recall_at_100"] == pytest.approx(ours["R@100"], abs=1e-4)
    assert scores["main_score"] == scores["ndcg_at_10"]


def test_exported_sentence_transformer_scores_the_same_in_mteb(encoder, arxiv, offline, tmp_path):
    from sentence_transformers import SentenceTransformer

    from llara.integrations.export import export_encoder

    out = export_encoder(encoder, tmp_path / "st", "sentence-transformers")
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    task = beir_retrieval_task(arxiv, name="ArxivTitleAbstract")
    via_st = mteb.evaluate(st, task, cache=None, encode_kwargs={"batch_size": 32}, show_progress_bar=False)
    ours = evaluate_dense(encoder, load_beir(arxiv), k=1000, show_progress_bar=False, long_documents="truncate").metrics
    assert via_st.task_results[0].scores["test"][0]["ndcg_at_10"] == pytest.approx(ours["nDCG@10"], abs=1e-4)
