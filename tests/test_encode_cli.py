"""The CLI round trip on real arXiv text: encode (two shards) -> index -> search -> a scored TREC run."""

import json

import pytest

from llara.data.beir import load_beir
from llara.evaluation import score_run
from llara.retrieval.runs import read_trec_run
from tests.conftest import make_tiny_model, run_cli


@pytest.mark.slow
def test_encode_index_search_round_trip_matches_evaluate(tiny_model_dir, arxiv_subset, tmp_path):
    emb, data = tmp_path / "emb", load_beir(arxiv_subset)
    common = ("--model", tiny_model_dir, "--precision", "fp32")
    for shard in ("1/2", "0/2"):
        res = run_cli("encode", *common, "--corpus", arxiv_subset / "corpus.jsonl", "--output", emb, "--shard", shard)
        assert res.returncode == 0, res.stderr
    manifests = sorted(emb.glob("manifest-*.json"))
    assert len(manifests) == 2 and all(json.loads(m.read_text())["complete"] for m in manifests)

    metrics = {}
    for kind in ("flat", "hnsw"):
        res = run_cli("index", "--embeddings", emb, "--output", tmp_path / kind, "--type", kind)
        assert res.returncode == 0, res.stderr
        run_file = tmp_path / f"{kind}.trec"
        args = ("--index", tmp_path / kind, "--queries", arxiv_subset / "queries.jsonl", "--output", run_file)
        res = run_cli("search", *common, *args, "--top-k", "100")
        assert res.returncode == 0, res.stderr
        run = read_trec_run(run_file)
        assert set(run) == set(data.queries) and all(len(r) == 100 for r in run.values())
        metrics[kind] = score_run(run, data.qrels)

    ev = ("--data", arxiv_subset, "--output", tmp_path / "ev", "--top-k", "100", "--max-tokens-per-batch", "2048")
    res = run_cli("evaluate", *common, *ev)
    assert res.returncode == 0, res.stderr
    reference = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["flat"]["nDCG@10"] == pytest.approx(reference["nDCG@10"], abs=1e-3)
    assert metrics["flat"]["R@100"] == pytest.approx(reference["R@100"], abs=1e-3)
    assert metrics["hnsw"]["nDCG@10"] == pytest.approx(metrics["flat"]["nDCG@10"], abs=0.02)


@pytest.mark.slow
def test_search_with_another_model_exits_2_and_writes_nothing(tiny_model_dir, arxiv_subset, tmp_path):
    emb = tmp_path / "emb"
    corpus = arxiv_subset / "corpus.jsonl"
    assert run_cli("encode", "--model", tiny_model_dir, "--corpus", corpus, "--output", emb).returncode == 0
    assert run_cli("index", "--embeddings", emb, "--output", tmp_path / "idx").returncode == 0
    other = make_tiny_model(tmp_path / "other", seed=1)
    out = tmp_path / "run.trec"
    res = run_cli("search", "--model", other, "--index", tmp_path / "idx", "--queries", arxiv_subset / "queries.jsonl",
                  "--output", out)  # fmt: skip
    last = res.stderr.strip().splitlines()[-1]  # (HF prints weight-loading progress before it)
    assert res.returncode == 2 and last.startswith("error:") and "model" in last and "Traceback" not in res.stderr
    assert not out.exists()
    res = run_cli("encode", "--model", tiny_model_dir, "--corpus", corpus, "--output", emb)
    assert res.returncode == 2 and "--resume" in res.stderr


@pytest.mark.slow
def test_torchrun_two_processes_encode_one_shard_each(tiny_model_dir, arxiv_subset, tmp_path):
    """`torchrun --nproc_per_node 2 -m llara encode`: each rank takes its shard from RANK/WORLD_SIZE,
    and the merged index holds exactly the single-process embeddings."""
    import subprocess
    import sys

    import numpy as np

    from llara.retrieval.index import DenseIndex

    corpus = arxiv_subset / "corpus.jsonl"
    common = ["--model", str(tiny_model_dir), "--precision", "fp32", "--corpus", str(corpus)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "llara", "encode", *common, "--output", str(tmp_path / "ddp")]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(list((tmp_path / "ddp").glob("manifest-*.json"))) == 2
    assert run_cli("encode", *common, "--output", tmp_path / "one").returncode == 0
    for name in ("ddp", "one"):
        assert run_cli("index", "--embeddings", tmp_path / name, "--output", tmp_path / f"idx-{name}").returncode == 0
    ddp, one = DenseIndex(tmp_path / "idx-ddp"), DenseIndex(tmp_path / "idx-one")
    assert ddp.ids == one.ids
    # torchrun gives each rank OMP_NUM_THREADS=1, so fp32 sums run in another order than the 2-thread
    # single process: equal to float rounding (a wrong shard or order differs by ~0.1, not 1e-5)
    assert np.allclose(ddp.index.reconstruct_n(0, ddp.index.ntotal), one.index.reconstruct_n(0, one.index.ntotal),
                       atol=1e-5)  # fmt: skip
