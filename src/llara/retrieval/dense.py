"""Dense retrieval with FAISS: exact inner product over L2-normalised embeddings (cosine)."""

from __future__ import annotations

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
