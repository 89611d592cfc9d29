import json

from llara.experiments.demo import Budget, run_demo

TINY = Budget(pretrain_minutes=0.05, finetune_minutes=0.05, passage_max_length=48, chunk_tokens=92, batch_size=4)


def test_demo_runs_every_stage_and_resumes(tiny_model_dir, tmp_path):
    out = tmp_path / "demo"
    rows = run_demo(out, model=str(tiny_model_dir), budget=TINY)
    assert list(rows) == [
        "BM25",
        f"{tiny_model_dir}, no adaptation",
        "+ EBAE/EBAR adaptation",
        "+ fine-tuning on weak pairs",
    ]
    for r in rows.values():
        assert 0.0 <= r["nDCG@10"] <= 1.0 and r["minutes"] >= 0
    assert rows["BM25"]["nDCG@10"] > 0.5  # real arXiv data: titles find their abstracts
    assert (out / "results.png").stat().st_size > 10_000
    assert "| BM25 |" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text()).keys() == rows.keys()
    assert (out / "models" / "pretrained" / "llara.json").is_file()
    assert (out / "models" / "finetuned" / "llara.json").is_file()

    # Interrupted after fine-tuning: only the missing stage runs again, the rest is reused.
    (out / "stages" / "finetune_eval.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    again = run_demo(out, model=str(tiny_model_dir), budget=TINY)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    assert before == {k: v for k, v in after.items() if k != "finetune_eval.json"}
    assert again["+ fine-tuning on weak pairs"]["nDCG@10"] == rows["+ fine-tuning on weak pairs"]["nDCG@10"]
