"""The CLI round trip on real CISI text: encode (two shards) -> index -> search -> a scored TREC run."""

import json

import pytest

from llara.data.beir import load_beir
from llara.evaluation import score_run
from llara.retrieval.runs import read_trec_run
from tests.conftest import make_tiny_model, run_cli


def test_encode_index_search_round_trip_matches_evaluate(tiny_model_dir, cisi_subset, tmp_path):
    emb, data = tmp_path / "emb", load_beir(cisi_subset)
    common = ("--model", tiny_model_dir, "--precision", "fp32")
    for shard in ("1/2", "0/2"):
        res = run_cli("encode", *common, "--corpus", cisi_subset / "corpus.jsonl", "--output", emb, "--shard", shard)
        assert res.returncode == 0, res.stderr
    manifests = sorted(emb.glob("manifest-*.json"))
    assert len(manifests) == 2 and all(json.loads(m.read_text())["complete"] for m in manifests)

    metrics = {}
    for kind in ("flat", "hnsw"):
        res = run_cli("index", "--embeddings", emb, "--output", tmp_path / kind, "--type", kind)
        assert res.returncode == 0, res.stderr
        run_file = tmp_path / f"{kind}.trec"
        args = ("--index", tmp_path / kind, "--queries", cisi_subset / "queries.jsonl", "--output", run_file)
        res = run_cli("search", *common, *args, "--top-k", "100")
        assert res.returncode == 0, res.stderr
        run = read_trec_run(run_file)
        assert set(run) == set(data.queries) and all(len(r) == 100 for r in run.values())
        metrics[kind] = score_run(run, data.qrels)

    ev = ("--data", cisi_subset, "--output", tmp_path / "ev", "--top-k", "100", "--max-tokens-per-batch", "2048")
    res = run_cli("evaluate", *common, *ev)
    assert res.returncode == 0, res.stderr
    reference = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["flat"]["nDCG@10"] == pytest.approx(reference["nDCG@10"], abs=1e-3)
    assert metrics["flat"]["R@100"] == pytest.approx(reference["R@100"], abs=1e-3)
    assert metrics["hnsw"]["nDCG@10"] == pytest.approx(metrics["flat"]["nDCG@10"], abs=0.02)


def test_search_with_another_model_exits_2_and_writes_nothing(tiny_model_dir, cisi_subset, tmp_path):
    emb = tmp_path / "emb"
    corpus = cisi_subset / "corpus.jsonl"
    assert run_cli("encode", "--model", tiny_model_dir, "--corpus", corpus, "--output", emb).returncode == 0
    assert run_cli("index", "--embeddings", emb, "--output", tmp_path / "idx").returncode == 0
    other = make_tiny_model(tmp_path / "other", seed=1)
    out = tmp_path / "run.trec"
    res = run_cli("search", "--model", other, "--index", tmp_path / "idx", "--queries", cisi_subset / "queries.jsonl",
                  "--output", out)  # fmt: skip
    last = res.stderr.strip().splitlines()[-1]  # (HF prints weight-loading progress before it)
    assert res.returncode == 2 and last.startswith("error:") and "model" in last and "Traceback" not in res.stderr
    assert not out.exists()
    res = run_cli("encode", "--model", tiny_model_dir, "--corpus", corpus, "--output", emb)
    assert res.returncode == 2 and "--resume" in res.stderr
