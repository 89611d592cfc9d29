import json

import pytest

from llara.data.beir import load_beir
from llara.retrieval.runs import read_trec_run
from tests.conftest import run_cli, write_beir
from tests.test_evaluation import pytrec_means


def check_outputs(out, data_dir, unanswered=()):
    """metrics.json agrees with pytrec_eval on run.trec; every query is in the run except `unanswered`
    (BM25 finds nothing for a query that shares no word with the corpus: it counts as 0)."""
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("nDCG@10", "RR@10", "R@100", "R@1000"):
        assert 0.0 <= metrics[name] <= 1.0
    run = read_trec_run(out / "run.trec")
    data = load_beir(data_dir)
    assert set(run) == set(data.queries) - set(unanswered)
    ref = pytrec_means(data.qrels, run)
    assert metrics["nDCG@10"] == pytest.approx(ref["ndcg_cut_10"], abs=1e-6)
    assert metrics["R@100"] == pytest.approx(ref["recall_100"], abs=1e-6)
    lines = (out / "run.trec").read_text().splitlines()
    qid, q0, _, rank, score, tag = lines[0].split()
    assert q0 == "Q0" and rank == "1" and tag.startswith("llara")
    return metrics


def test_evaluate_bm25_on_arxiv(arxiv_dir, tmp_path):
    res = run_cli("evaluate", "--method", "bm25", "--data", arxiv_dir, "--output", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    # the title "Amanuensis: The Programmer's Apprentice" shares no word with any abstract
    metrics = check_outputs(tmp_path / "out", arxiv_dir, unanswered={"1807.00082"})
    assert metrics["nDCG@10"] == pytest.approx(0.893, abs=0.005)  # benchmarks/RESULTS.md, `llara demo`'s BM25 row
    assert metrics["info"]["warnings"] == [] and "warning" not in res.stderr
    assert "nDCG@10" in res.stdout


def test_evaluate_dense_tiny_model(tiny_model_dir, arxiv_subset, tmp_path):
    res = run_cli(
        "evaluate",
        "--model",
        tiny_model_dir,
        "--data",
        arxiv_subset,
        "--output",
        tmp_path / "out",
        "--precision",
        "fp32",
        "--passage-max-length",
        "64",
    )
    assert res.returncode == 0, res.stderr
    metrics = check_outputs(tmp_path / "out", arxiv_subset)
    assert metrics["info"]["recipe"] == "reference" and metrics["info"]["documents"] == len(
        load_beir(arxiv_subset).corpus
    )


@pytest.mark.parametrize(
    "plant, expected",
    [
        (
            lambda d: (d / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": \n'),
            "corpus.jsonl:2: malformed JSON",
        ),
        (
            lambda d: (d / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"text": "x"}\n'),
            "corpus.jsonl:2: field '_id'",
        ),
        (lambda d: (d / "corpus.jsonl").write_text(""), "corpus is empty"),
        (lambda d: (d / "queries.jsonl").unlink(), "queries file not found"),
        (
            lambda d: (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n"),
            "test.tsv:2: expected 3 tab-separated columns",
        ),
        (
            lambda d: (d / "queries.jsonl").write_text('{"_id": "q 1", "text": "q"}\n'),
            "queries.jsonl:1: field '_id': id 'q 1' contains whitespace",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, plant, expected):
    data = write_beir(tmp_path / "data", [{"_id": "d1", "text": "ok"}], [{"_id": "q1", "text": "q"}], [("q1", "d1", 1)])
    plant(data)
    out = tmp_path / "out"
    res = run_cli("evaluate", "--method", "bm25", "--data", data, "--output", out)
    assert res.returncode == 2
    assert expected in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_unknown_model_is_a_clear_error(arxiv_subset, tmp_path):
    res = run_cli("evaluate", "--model", tmp_path / "missing", "--data", arxiv_subset, "--output", tmp_path / "o")
    assert res.returncode == 2 and "not a built-in name" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_evaluate_real_smollm2(arxiv_subset, tmp_path, smollm2_dir):
    res = run_cli(
        "evaluate",
        "--model",
        "smollm2",
        "--data",
        arxiv_subset,
        "--output",
        tmp_path / "out",
        "--passage-max-length",
        "128",
    )
    assert res.returncode == 0, res.stderr
    metrics = check_outputs(tmp_path / "out", arxiv_subset)
    assert metrics["info"]["model"] == "smollm2" and metrics["info"]["docs_per_s"] > 0
