"""`llara ablate` end to end on the tiny random model: every arm, per-seed tests, resumable stages."""

import json
import statistics

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_ablate_runs_every_arm_and_resumes(tiny_model_dir, arxiv_subset, tmp_path):
    out = tmp_path / "ablate"
    args = ["ablate", "--data", arxiv_subset, "--output", out, "--model", tiny_model_dir]
    args += ["--seeds", "2", "--pretrain-steps", "1", "--finetune-steps", "2"]  # step 1 is warm-up at lr 0
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "title -> text" in first.stderr  # the papers have titles: title queries, and it says so

    report = json.loads((out / "ablation.json").read_text())
    assert list(report["arms"]) == ["BM25", "raw", "adapted", "ft-raw", "ft-adapted"]
    assert report["training"]["query_mode"] == "title"
    for arm in ("ft-raw", "ft-adapted"):
        runs = report["arms"][arm]["runs"]
        assert runs == [f"{arm}-s1", f"{arm}-s2"]
        # mean and std agree with the per-seed evaluations' own metrics.json
        values = [json.loads((out / "runs" / r / "metrics.json").read_text())["nDCG@10"] for r in runs]
        stats = report["arms"][arm]["metrics"]["nDCG@10"]
        assert stats["values"] == values or all(abs(a - b) < 1e-9 for a, b in zip(stats["values"], values, strict=True))
        assert abs(stats["mean"] - statistics.fmean(values)) < 1e-9
        assert abs(stats["std"] - statistics.stdev(values)) < 1e-9
    for arm in ("BM25", "raw", "adapted"):
        assert len(report["arms"][arm]["runs"]) == 1 and report["arms"][arm]["metrics"]["nDCG@10"]["std"] is None
    for name in ("bm25", "raw", "adapted", "ft-raw-s1", "ft-adapted-s2"):
        assert {p.name for p in (out / "runs" / name).iterdir()} == {"run.trec", "metrics.json", "per_query.json"}

    per_seed = report["adaptation_effect"]["per_seed"]
    assert [p["seed"] for p in per_seed] == [1, 2]
    for p in per_seed:
        assert {c["metric"] for c in p["comparisons"]} == {"nDCG@10", "RR@10", "R@100"}
        assert all(c["run"].startswith("ft-adapted-s") for c in p["comparisons"])
        assert all(0 <= c[k] <= 1 for c in p["comparisons"] for k in ("p_permutation", "p_t", "p_t_holm"))
    summary = report["adaptation_effect"]["summary"]["nDCG@10"]
    assert len(summary["deltas"]) == 2 and 0 <= summary["seeds_favouring_adaptation"] <= 2
    vs = report["vs_bm25"]
    assert vs["baseline"] == "bm25"
    assert {c["run"] for c in vs["comparisons"]} == {
        "raw",
        "adapted",
        "ft-raw-s1",
        "ft-raw-s2",
        "ft-adapted-s1",
        "ft-adapted-s2",
    }
    assert all(0 <= c["p_permutation_holm"] <= 1 for c in vs["comparisons"])
    md = (out / "ablation.md").read_text()
    assert "| ft-adapted | 2 |" in md and "seeds favour adaptation" in md

    # A rerun trains nothing: every stage is reused and the models are untouched; a model saved by a
    # run killed before its stage was recorded counts as finished.
    models = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    (out / "stages" / "finetune-ft-adapted-s2.json").unlink()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done earlier" in again.stderr
    started = [line for line in again.stderr.splitlines() if line.startswith("> ")]
    assert started == ["> fine-tune ft-adapted-s2 (seed 2)"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == models
    assert json.loads((out / "ablation.json").read_text())["arms"] == report["arms"]

    # Reused stages would not match other budgets: refused before anything is touched.
    other = run_cli(*args[:-1], "3")
    assert other.returncode == 2 and "other finetune" in other.stderr, other.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == models


def test_ablate_refuses_bad_input_before_writing(arxiv_subset, tmp_path):
    out = tmp_path / "ablate"
    r = run_cli("ablate", "--data", arxiv_subset, "--output", out, "--seeds", "0")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "--seeds must be at least 1" in r.stderr
    r = run_cli("ablate", "--data", arxiv_subset, "--output", out, "--train", tmp_path / "missing.jsonl")
    assert r.returncode == 2 and "missing.jsonl" in r.stderr
    assert not out.exists()
