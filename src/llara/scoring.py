"""Scoring a run against judgements with ir-measures (pytrec_eval).

No metric is hand-written here: ir-measures computes each query's value, and a judged query that
retrieved nothing counts as 0 (as `trec_eval -c` does) rather than silently leaving the mean.
"""

from __future__ import annotations

import ir_measures

from llara.retrieval.runs import Run

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000")


def per_query_scores(
    run: Run, qrels: dict[str, dict[str, int]], measures=DEFAULT_MEASURES
) -> dict[str, dict[str, float]]:
    """query id -> measure -> value for every judged query; a query the run lacks scores 0 (trec_eval -c)."""
    parsed = [ir_measures.parse_measure(m) for m in measures]
    scores = {q: {str(m): 0.0 for m in parsed} for q in qrels}
    for result in ir_measures.iter_calc(parsed, qrels, {q: r for q, r in run.items() if q in qrels}):
        scores[result.query_id][str(result.measure)] = result.value
    return scores


def mean_scores(per_query: dict[str, dict[str, float]], measures=DEFAULT_MEASURES) -> dict[str, float]:
    names = [str(ir_measures.parse_measure(m)) for m in measures]
    return {m: sum(v[m] for v in per_query.values()) / len(per_query) for m in names}


def score_run(run: Run, qrels: dict[str, dict[str, int]], measures=DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over all judged queries."""
    return mean_scores(per_query_scores(run, qrels, measures), measures)


__all__ = ["DEFAULT_MEASURES", "mean_scores", "per_query_scores", "score_run"]
