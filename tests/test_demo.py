"""`llara demo` end to end on the tiny random model: every row, its test against BM25, resumable stages."""

import json

import pytest

from llara.data.beir import load_beir
from llara.evaluation import score_run
from llara.experiments.demo import Budget, row_names, run_demo
from llara.retrieval.fusion import Fusion, fuse
from llara.retrieval.runs import read_trec_run

TINY = Budget(pretrain_minutes=0.05, finetune_minutes=0.05, passage_max_length=48, chunk_tokens=92, batch_size=4)
P_VALUES = ("p_permutation", "p_permutation_holm", "p_t", "p_t_holm")


def started(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("> ")]


@pytest.mark.slow
def test_demo_runs_every_stage_and_resumes(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, model=str(tiny_model_dir), budget=TINY)
    rows = report["rows"]
    assert list(rows) == [
        "BM25",
        f"{tiny_model_dir}, raw",
        "adapted (EBAE + EBAR)",
        "fine-tuned, no adaptation",
        "adapted + fine-tuned",
        "hybrid: BM25 + adapted + fine-tuned",
    ]
    assert list(rows) == list(row_names(str(tiny_model_dir)).values())
    for r in rows.values():
        assert 0.0 <= r["metrics"]["nDCG@10"] <= 1.0 and r["minutes"] >= 0
        assert {p.name for p in (out / r["run"]).parent.iterdir()} == {"run.trec", "metrics.json", "per_query.json"}
    assert rows["BM25"]["metrics"]["nDCG@10"] > 0.5  # real arXiv data: titles find their abstracts

    # Every row but BM25 against BM25 on each metric of the table, Holm over the 5 rows x 2 metrics.
    assert rows["BM25"]["vs_bm25"] is None
    assert report["significance"]["baseline"] == "bm25" and report["significance"]["metrics"] == ["nDCG@10", "R@100"]
    for r in list(rows.values())[1:]:
        assert list(r["vs_bm25"]) == ["nDCG@10", "R@100"]
        for m, c in r["vs_bm25"].items():
            assert all(0.0 <= c[k] <= 1.0 for k in P_VALUES) and c["p_permutation_holm"] >= c["p_permutation"]
            assert c["wins"] + c["ties"] + c["losses"] == report["queries"] == 314
            # the run files keep scores exactly, so the file ranks as memory did, near-ties included
            # (a tiny random model's scores differ in the 7th decimal: rounded files once moved 3 queries)
            gap = abs(c["delta"] - (r["metrics"][m] - rows["BM25"]["metrics"][m]))
            assert gap < 1e-9
    assert "10 comparisons" in report["significance"]["correction"]["family"]

    # The hybrid is min-max score fusion of the BM25 and the adapted + fine-tuned run files, its weight
    # chosen on held-out weak pairs of the abstracts (no judgements read), as `llara evaluate` does.
    data = load_beir(out / "data" / "arxiv")
    hybrid = report["hybrid"]
    assert hybrid["method"] == "auto" and "rrf_k" not in hybrid and hybrid["weight_source"] == "weak pairs"
    assert hybrid["evidence"]["pairs"] == 300 and hybrid["evidence"]["weight"] == hybrid["weight"]
    chosen = Fusion("score", hybrid["weight"])
    fused = fuse(read_trec_run(out / "runs/bm25/run.trec"), read_trec_run(out / "runs/ft-adapted/run.trec"), chosen)
    assert score_run(fused, data.qrels) == rows["hybrid: BM25 + adapted + fine-tuned"]["metrics"]

    # Both fine-tuned rows trained alike on the same pairs, from the raw and from the adapted model.
    records = {}
    for name in ("finetuned-raw", "finetuned"):
        records[name] = json.loads((out / "models" / name / "llara.json").read_text())["training"][-1]
    assert records["finetuned-raw"].pop("base_model") == str(tiny_model_dir)
    assert records["finetuned"].pop("base_model") == str(out / "models" / "pretrained")
    assert records["finetuned-raw"] == records["finetuned"]
    assert rows["fine-tuned, no adaptation"]["steps"] >= 1 and rows["adapted + fine-tuned"]["steps"] >= 1

    # JSON, Markdown and PNG.
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
    md = (out / "results.md").read_text()
    assert "| BM25 |" in md and "Δ nDCG@10 vs BM25" in md and "## Every row vs BM25" in md
    assert all(f"| {name} |" in md for name in rows)
    assert (out / "results.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "vs BM25" in printed and len(started(printed)) == 10  # every stage ran

    # Interrupted after fine-tuning: only the missing stage runs again, the rest is reused; the hybrid and
    # the tests come out of the run files exactly as before.
    (out / "stages" / "finetune_eval.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    models = {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()}
    again = run_demo(out, model=str(tiny_model_dir), budget=TINY)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    assert before == {k: v for k, v in after.items() if k != "finetune_eval.json"}
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").iterdir()} == models
    assert started(capsys.readouterr().out) == ["> evaluate the adapted + fine-tuned model"]
    for name, r in rows.items():
        assert again["rows"][name]["metrics"] == r["metrics"]
        assert again["rows"][name]["vs_bm25"] == r["vs_bm25"]
    saved = json.loads((out / "results.json").read_text())
    assert {n: r["vs_bm25"] for n, r in saved["rows"].items()} == {n: r["vs_bm25"] for n, r in rows.items()}

    # Nothing missing: every stage is reused.
    run_demo(out, model=str(tiny_model_dir), budget=TINY)
    assert started(capsys.readouterr().out) == []
    saved = json.loads((out / "results.json").read_text())
    assert {n: r["vs_bm25"] for n, r in saved["rows"].items()} == {n: r["vs_bm25"] for n, r in rows.items()}
