"""Dense retrieval with FAISS: exact inner product over L2-normalised embeddings (cosine)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import faiss
import numpy as np

from llara.data.io import check_finite
from llara.retrieval.runs import Run

log = logging.getLogger(__name__)


def flat_index(embeddings: np.ndarray) -> faiss.Index:
    check_finite(embeddings, "document embeddings")
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def search(
    index: faiss.Index, queries: np.ndarray, k: int, batch_size: int = 4096, owner: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row ids) for each query, in query batches to bound memory. With `owner` (row ->
    document number, for an index of passages) the top k documents, each by its best row (MaxP): its
    row id and score; rows of a document already found are skipped, searching deeper until k documents
    are found or every row is seen."""
    check_finite(queries, "query embeddings")
    if owner is not None and len(owner) > 0 and int(owner.max()) + 1 < index.ntotal:
        return _documents(index, queries, k, batch_size, owner)
    k = min(k, index.ntotal)
    scores, ids = [], []
    for start in range(0, len(queries), batch_size):
        s, i = index.search(np.ascontiguousarray(queries[start : start + batch_size], dtype=np.float32), k)
        scores.append(s)
        ids.append(i)
    return np.concatenate(scores), np.concatenate(ids)


def _documents(
    index: faiss.Index, queries: np.ndarray, k: int, batch_size: int, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, int(owner.max()) + 1)
    depth = min(index.ntotal, -(-k * index.ntotal // (int(owner.max()) + 1)) * 2)  # twice the mean passages per doc
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    rows = np.full((len(queries), k), -1, dtype=np.int64)
    todo = np.arange(len(queries))
    while len(todo):
        s, i = search(index, queries[todo], depth, batch_size)
        short = []
        for q, srow, irow in zip(todo, s, i, strict=True):
            found = irow >= 0
            srow, irow = srow[found], irow[found]
            _, first = np.unique(owner[irow], return_index=True)  # each document's best row (rows come best first)
            first = np.sort(first)[:k]
            if len(first) < k and depth < index.ntotal:
                short.append(q)
                continue
            scores[q, : len(first)], rows[q, : len(first)] = srow[first], irow[first]
        todo = np.array(short, dtype=np.int64)
        depth = min(index.ntotal, depth * 2)
    return scores, rows


def to_run(query_ids: list[str], doc_ids: list[str], scores: np.ndarray, rows: np.ndarray) -> Run:
    run: Run = {}
    for qid, srow, irow in zip(query_ids, scores, rows, strict=True):
        found: dict[str, float] = {}
        for s, j in zip(srow, irow, strict=True):
            if j >= 0 and doc_ids[j] not in found:  # a document's best row comes first
                found[doc_ids[j]] = float(s)
        run[qid] = found
    return run


def owners(doc_ids: list[str]) -> np.ndarray | None:
    """Row -> document number where some rows share a document id (an index of passages), else None."""
    numbers: dict[str, int] = {}
    owner = np.fromiter((numbers.setdefault(d, len(numbers)) for d in doc_ids), dtype=np.int64, count=len(doc_ids))
    return owner if len(numbers) < len(doc_ids) else None


@dataclass
class EncodedCorpus:
    """A corpus encoded into an exact FAISS index of its passages (several rows for a split document),
    searchable again (as `--fusion auto` does): each document by its best passage."""

    doc_ids: list[str]  # per row
    index: faiss.Index
    owner: np.ndarray | None = None  # row -> document number, if documents were split
    documents: dict = field(default_factory=dict)  # Passages.record(): documents, long ones, passages

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return search(self.index, queries, k, owner=self.owner)


def index_corpus(encoder, corpus: dict[str, dict[str, str]], long_documents: str = "split", **opts) -> EncodedCorpus:
    """A BEIR corpus through the passage prompt into an exact index (`long_documents`: split or truncate)."""
    doc_ids = list(corpus)
    emb, passages = encoder.encode_documents([corpus[d] for d in doc_ids], long_documents=long_documents, **opts)
    if passages.long:  # said by the one caller that reads a whole corpus, not per chunk or per weak-pair sample
        log.info("%s", passages.counts().summary(encoder.max_length["passage"]))
    owner = np.asarray(passages.owner, dtype=np.int64)
    split = len(owner) > len(doc_ids)
    return EncodedCorpus(
        [doc_ids[i] for i in owner], flat_index(emb), owner if split else None, passages.counts().record()
    )


def exact_search(
    encoder,
    corpus: dict[str, dict[str, str]],
    queries: dict[str, str],
    k: int = 1000,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    max_tokens_per_batch: int | None = None,
    long_documents: str = "split",
) -> tuple[Run, dict[str, float], EncodedCorpus]:
    """Encode a BEIR corpus (passage prompt; long documents split or truncated) and queries (query
    prompt), search exactly: (top-k run, timings, the encoded corpus)."""
    opts = {
        "batch_size": batch_size,
        "show_progress_bar": show_progress_bar,
        "max_tokens_per_batch": max_tokens_per_batch,
    }
    t0 = time.perf_counter()
    encoded = index_corpus(encoder, corpus, long_documents, **opts)
    t1 = time.perf_counter()
    q_emb = encoder.encode_queries(list(queries.values()), **opts)
    t2 = time.perf_counter()
    scores, rows = encoded.search(q_emb, k)
    run = to_run(list(queries), encoded.doc_ids, scores, rows)
    t3 = time.perf_counter()
    timings = {
        "encode_corpus_s": t1 - t0,
        "encode_queries_s": t2 - t1,
        "search_s": t3 - t2,
        "docs_per_s": len(corpus) / max(t1 - t0, 1e-9),
    }
    return run, timings, encoded
