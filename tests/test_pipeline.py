"""`llara pipeline`: a corpus without titles or labels to a model, an index and a held-out check, resumable."""

import json

import pytest

from llara.calibration import sample_weak_pairs
from llara.data.beir import read_corpus
from tests.conftest import run_cli


@pytest.mark.slow
def test_pipeline_runs_every_stage_holds_its_check_out_of_training_and_resumes(tiny_model_dir, arxiv_subset, tmp_path):
    out = tmp_path / "pipe"
    corpus = tmp_path / "corpus.jsonl"
    # the arXiv abstracts without their titles: a corpus of plain passages
    rows = [json.loads(line) for line in (arxiv_subset / "corpus.jsonl").read_text().splitlines()]
    corpus.write_text("".join(json.dumps({"_id": r["_id"], "title": "", "text": r["text"]}) + "\n" for r in rows))
    args = ["pipeline", "--corpus", corpus, "--output", out, "--model", tiny_model_dir]
    res = run_cli(*args, "--pretrain-minutes", "0.05", "--finetune-minutes", "0.05")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "pipeline.json").read_text())
    assert (out / "model" / "llara.json").is_file() and (out / "index" / "meta.json").is_file()
    assert report["finetune_steps"] >= 1 and report["index_type"] == "flat"

    docs = read_corpus(corpus)
    held_out = set(sample_weak_pairs(docs, len(docs) // 5)[0])
    assert report["pairs"]["held_out"] == len(held_out) == report["check"]["held_out_of_training"] > 0
    trained_on = {json.loads(line)["doc_id"] for line in (out / "pairs.jsonl").read_text().splitlines()}
    assert trained_on and not trained_on & held_out  # no training row comes from a checked document
    weak = report["check"]["weak_pairs"]
    assert weak["pairs"] == len(held_out) and weak["sources"] == {"sentence": len(held_out)}
    assert 0.0 <= weak["dense"] <= 1.0 and weak["bm25"] > 0.3  # BM25 finds a sentence's abstract well
    said = " ".join((res.stdout + res.stderr).split())  # rich wraps lines at the terminal's width
    assert "held-out weak pairs" in said and "llara search --model" in said
    # the choice is recorded in the model's llara.json, with the corpus it was made on and its evidence
    recorded = json.loads((out / "model" / "llara.json").read_text())["fusion"]
    assert recorded["method"] == "auto" and recorded["weight"] == weak["weight"] and recorded["evidence"] == weak
    assert recorded["documents"] == len(docs) and recorded["long_documents"] == "split"

    # rerun: every stage reused, nothing trained again
    mtime = (out / "model" / "llara.json").stat().st_mtime_ns
    again = run_cli(*args, "--pretrain-minutes", "0.05", "--finetune-minutes", "0.05")
    assert again.returncode == 0, again.stderr[-3000:]
    assert " ".join((again.stdout + again.stderr).split()).count("done earlier, reusing") == 6
    assert (out / "model" / "llara.json").stat().st_mtime_ns == mtime

    # the index it printed searches, hybrid by default choosing its weight
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "q", "text": rows[0]["text"].split(".")[0]}) + "\n")
    found = run_cli(
        "search", "--model", out / "model", "--index", out / "index", "--corpus", corpus,
        "--queries", queries, "--output", tmp_path / "run.trec", "--method", "hybrid",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    assert "fusion: " in found.stdout + found.stderr and (tmp_path / "run.trec").read_text().startswith("q Q0 ")
    # over the pipeline's corpus, search uses the recorded choice rather than measuring other pairs
    said = " ".join((found.stdout + found.stderr).split())
    assert "recorded in" in said and "llara.json" in said

    # another corpus (one document changed): measured again, the record left as it was
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text().replace(rows[1]["text"], rows[1]["text"] + " Changed."))
    again = run_cli(
        "search", "--model", out / "model", "--index", out / "index", "--corpus", other,
        "--queries", queries, "--output", tmp_path / "run2.trec", "--method", "hybrid",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    said = " ".join((again.stdout + again.stderr).split())
    assert "fusion: " in said and "recorded in" not in said


@pytest.mark.slow
def test_pipeline_by_default_fine_tunes_the_model_itself(tiny_model_dir, arxiv_subset, tmp_path):
    """No --pretrain-minutes (default 0: fine-tuning from the raw model beat 12 + 12 minutes on the suite):
    no adapt stage, no adapted folder, fine-tuning starts from --model; a negative budget is refused in
    one line."""
    out = tmp_path / "pipe"
    args = ["pipeline", "--corpus", arxiv_subset / "corpus.jsonl", "--output", out, "--model", tiny_model_dir]
    res = run_cli(*args, "--finetune-minutes", "0.05")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "pipeline.json").read_text())
    assert report["finetuned_from"] == str(tiny_model_dir) and report["finetune_steps"] >= 1
    assert "adapt" not in report["minutes"] and not (out / "adapted").exists()
    assert not (out / "stages" / "adapt.json").exists() and (out / "model" / "llara.json").is_file()
    assert "adaptation: skipped" in " ".join((res.stdout + res.stderr).split())

    bad = run_cli(*args, "--pretrain-minutes", "-1")
    assert bad.returncode == 2 and "--pretrain-minutes must be 0 or more" in " ".join((bad.stdout + bad.stderr).split())
