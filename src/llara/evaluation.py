"""The evaluation harness: retrieve for every judged query, score with ir-measures (pytrec_eval).

No metric is hand-written here: ir-measures computes each query's value, and a judged query that
retrieved nothing counts as 0 (as `trec_eval -c` does) rather than silently leaving the mean.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import ir_measures

from llara.data.beir import BeirDataset
from llara.prompts import format_document
from llara.retrieval.runs import Run

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000")


def score_run(run: Run, qrels: dict[str, dict[str, int]], measures=DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over all judged queries."""
    parsed = [ir_measures.parse_measure(m) for m in measures]
    totals = {m: 0.0 for m in parsed}
    for result in ir_measures.iter_calc(parsed, qrels, {q: r for q, r in run.items() if q in qrels}):
        totals[result.measure] += result.value
    return {str(m): totals[m] / len(qrels) for m in parsed}


@dataclass
class Evaluation:
    run: Run
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)


def evaluate_bm25(data: BeirDataset, k: int = 1000) -> Evaluation:
    from llara.retrieval.bm25 import BM25

    t0 = time.perf_counter()
    doc_ids = list(data.corpus)
    bm25 = BM25(doc_ids, [format_document(data.corpus[d]) for d in doc_ids])
    run = bm25.search(list(data.queries), list(data.queries.values()), k=k)
    return Evaluation(run, score_run(run, data.qrels), {"search_s": time.perf_counter() - t0})


def evaluate_dense(
    encoder,
    data: BeirDataset,
    k: int = 1000,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    max_tokens_per_batch: int | None = None,
) -> Evaluation:
    """Encode corpus and queries, exact inner-product FAISS search, score the top k."""
    from llara.retrieval.dense import flat_index, search, to_run

    doc_ids = list(data.corpus)
    t0 = time.perf_counter()
    doc_emb = encoder.encode_corpus(
        [data.corpus[d] for d in doc_ids],
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        max_tokens_per_batch=max_tokens_per_batch,
    )
    t1 = time.perf_counter()
    q_emb = encoder.encode_queries(
        list(data.queries.values()),
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
        max_tokens_per_batch=max_tokens_per_batch,
    )
    t2 = time.perf_counter()
    scores, rows = search(flat_index(doc_emb), q_emb, k)
    run = to_run(list(data.queries), doc_ids, scores, rows)
    t3 = time.perf_counter()
    timings = {
        "encode_corpus_s": t1 - t0,
        "encode_queries_s": t2 - t1,
        "search_s": t3 - t2,
        "docs_per_s": len(doc_ids) / max(t1 - t0, 1e-9),
    }
    return Evaluation(run, score_run(run, data.qrels), timings)
