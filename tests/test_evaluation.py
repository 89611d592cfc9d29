import pytest
import pytrec_eval

from llara.data.beir import load_beir
from llara.evaluation import evaluate_bm25, score_run
from llara.retrieval.runs import read_trec_run, write_trec_run


def pytrec_means(qrels, run, measures=("ndcg_cut_10", "recip_rank", "recall_100")):
    """An independent computation: pytrec_eval directly, mean over all judged queries (0 if absent)."""
    per_query = pytrec_eval.RelevanceEvaluator(qrels, set(measures)).evaluate(run)
    out = {}
    for m in measures:
        out[m] = sum(per_query.get(q, {}).get(m, 0.0) for q in qrels) / len(qrels)
    return out


def test_bm25_on_arxiv_matches_reference_and_pytrec_eval(arxiv_dir, tmp_path):
    data = load_beir(arxiv_dir)
    result = evaluate_bm25(data)
    # benchmarks/RESULTS.md's measured reference point for bm25s on the arXiv demo set: 0.893 / 0.997
    assert result.metrics["nDCG@10"] == pytest.approx(0.893, abs=0.005)
    assert result.metrics["R@100"] == pytest.approx(0.997, abs=0.005)
    write_trec_run(tmp_path / "run.trec", result.run)
    run = read_trec_run(tmp_path / "run.trec")
    ref = pytrec_means(data.qrels, run)
    assert result.metrics["nDCG@10"] == pytest.approx(ref["ndcg_cut_10"], abs=1e-6)
    assert result.metrics["R@100"] == pytest.approx(ref["recall_100"], abs=1e-6)


def test_rr_at_10_is_cut_at_10():
    qrels = {"q": {"d11": 1}}
    run = {"q": {f"d{i}": 100.0 - i for i in range(1, 20)}}
    assert score_run(run, qrels)["RR@10"] == 0.0
    run["q"]["d11"] = 1000.0
    assert score_run(run, qrels)["RR@10"] == 1.0


def test_query_without_results_counts_as_zero():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}}
    assert score_run({"a": {"d1": 1.0}}, qrels)["nDCG@10"] == pytest.approx(0.5)
