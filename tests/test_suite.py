"""`llara evaluate` over several --data folders: each collection against BM25, the macro average, and the
files a suite writes; the per-collection tests are `llara compare`'s on the same run files."""

import json
import random

import pytest
from typer.testing import CliRunner

from llara.comparison import compare_runs
from llara.errors import LlaraError
from tests.conftest import WORDS, write_beir


def collection(folder, seed: int, docs: int = 30, queries: int = 8):
    rng = random.Random(seed)
    corpus = [
        {"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS) for _ in range(12))} for i in range(docs)
    ]
    qs = [{"_id": f"q{i}", "text": " ".join(rng.sample(corpus[i]["text"].split(), 3))} for i in range(queries)]
    return write_beir(folder, corpus, qs, [(f"q{i}", f"d{i}", 1) for i in range(queries)])


@pytest.fixture
def two_collections(tmp_path):
    return [collection(tmp_path / "alpha", 0), collection(tmp_path / "beta", 1, docs=40, queries=12)]


def evaluate(*args):
    from llara.cli import app

    res = CliRunner().invoke(app, ["evaluate", *map(str, args)])
    return res


def test_a_suite_is_each_collection_against_bm25_and_the_macro_average(tiny_model_dir, two_collections, tmp_path):
    out = tmp_path / "suite"
    data = [a for folder in two_collections for a in ("--data", folder)]
    res = evaluate("--model", tiny_model_dir, "--precision", "fp32", *data, "--output", out, "--top-k", "20")
    assert res.exit_code == 0, res.output
    report = json.loads((out / "suite.json").read_text())
    assert report["method"] == "dense" and report["metrics"] == ["nDCG@10", "R@100"]
    rows = report["collections"]
    assert [r["collection"] for r in rows] == ["alpha", "beta"] and [r["queries"] for r in rows] == [8, 12]
    for r, folder in zip(rows, two_collections, strict=True):
        name = folder.name
        for method in ("bm25", "dense"):
            files = {p.name for p in (out / name / method).iterdir()}
            assert files == {"run.trec", "metrics.json", "per_query.json"}
            metrics = json.loads((out / name / method / "metrics.json").read_text())
            side = "bm25" if method == "bm25" else "method"
            assert all(r[side][m] == metrics[m] for m in report["metrics"])
        # each collection's test is `llara compare` of the two run files, BM25 the baseline
        runs = [out / name / "bm25" / "run.trec", out / name / "dense" / "run.trec"]
        compared = compare_runs(runs, folder / "qrels" / "test.tsv", ("nDCG@10", "R@100"), baseline=runs[0])
        for c in compared["comparisons"]:
            mine = r["vs_bm25"][c["metric"]]
            assert mine["p_permutation_holm"] == c["p_permutation_holm"] and mine["delta"] == pytest.approx(c["delta"])
    for m in report["metrics"]:  # the macro average counts each collection once, whatever its size
        for side in ("bm25", "method"):
            assert report["macro"][side][m] == pytest.approx((rows[0][side][m] + rows[1][side][m]) / 2)
        tally = report["significant"][m]
        assert tally["collections"] == 2 and tally["better"] + tally["worse"] <= 2
    md = (out / "suite.md").read_text()
    assert "| alpha | 8 |" in md and "| macro |" in md and "dense against BM25, 2 collections" in md
    assert "macro" in res.output and "wrote" in res.output


def test_a_suite_refuses_two_folders_of_one_name_and_a_missing_split_before_running(two_collections, tmp_path):
    again = collection(tmp_path / "other" / "alpha", 2)
    res = evaluate("--method", "bm25", "--data", two_collections[0], "--data", again, "--output", tmp_path / "o1")
    assert isinstance(res.exception, LlaraError) and "two dataset folders are named 'alpha'" in str(res.exception)
    (two_collections[1] / "qrels" / "test.tsv").unlink()
    data = [a for folder in two_collections for a in ("--data", folder)]
    res = evaluate("--method", "bm25", *data, "--output", tmp_path / "o2")
    assert isinstance(res.exception, LlaraError) and "no qrels/test.tsv" in str(res.exception)
    assert not (tmp_path / "o2").exists()  # nothing written: the first collection did not run either
