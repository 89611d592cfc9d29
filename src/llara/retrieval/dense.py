"""Dense retrieval with FAISS: exact inner product over L2-normalised embeddings (cosine)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import faiss
import numpy as np

from llara.data.io import check_finite
from llara.retrieval.runs import Run


def flat_index(embeddings: np.ndarray) -> faiss.Index:
    check_finite(embeddings, "document embeddings")
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row ids) for each query, in query batches to bound memory."""
    check_finite(queries, "query embeddings")
    k = min(k, index.ntotal)
    scores, ids = [], []
    for start in range(0, len(queries), batch_size):
        s, i = index.search(np.ascontiguousarray(queries[start : start + batch_size], dtype=np.float32), k)
        scores.append(s)
        ids.append(i)
    return np.concatenate(scores), np.concatenate(ids)


def to_run(query_ids: list[str], doc_ids: list[str], scores: np.ndarray, rows: np.ndarray) -> Run:
    run: Run = {}
    for qid, srow, irow in zip(query_ids, scores, rows, strict=True):
        run[qid] = {doc_ids[j]: float(s) for s, j in zip(srow, irow, strict=True) if j >= 0}
    return run


@dataclass
class EncodedCorpus:
    """A corpus encoded into an exact FAISS index, searchable again (as `--fusion auto` does)."""

    doc_ids: list[str]
    index: faiss.Index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search(self.index, queries, k)


def exact_search(
    encoder,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    k: int = 1000,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    max_tokens_per_batch: int | None = None,
) -> tuple[Run, dict[str, float], EncodedCorpus]:
    """Encode a BEIR corpus (passage prompt) and queries (query prompt), search exactly: (top-k run,
    timings, the encoded corpus)."""
    doc_ids = list(corpus)
    opts = {
        "batch_size": batch_size,
        "show_progress_bar": show_progress_bar,
        "max_tokens_per_batch": max_tokens_per_batch,
    }
    t0 = time.perf_counter()
    encoded = EncodedCorpus(doc_ids, flat_index(encoder.encode_corpus([corpus[d] for d in doc_ids], **opts)))
    t1 = time.perf_counter()
    q_emb = encoder.encode_queries(list(queries.values()), **opts)
    t2 = time.perf_counter()
    scores, rows = encoded.search(q_emb, k)
    run = to_run(list(queries), doc_ids, scores, rows)
    t3 = time.perf_counter()
    timings = {
        "encode_corpus_s": t1 - t0,
        "encode_queries_s": t2 - t1,
        "search_s": t3 - t2,
        "docs_per_s": len(doc_ids) / max(t1 - t0, 1e-9),
    }
    return run, timings, encoded
