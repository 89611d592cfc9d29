"""Hybrid retrieval: RRF and min-max score fusion by hand, weight tuning on another split only, and
`llara evaluate/search --method hybrid` end to end on a small BEIR folder written here."""

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from llara.data.beir import load_beir
from llara.errors import LlaraError
from llara.evaluation import evaluate_bm25, evaluate_dense, evaluate_hybrid, tune_weight, tuning_split
from llara.retrieval.fusion import (
    Fusion,
    fuse,
    fusion_options,
    min_max,
    reciprocal_rank_fusion,
    score_fusion,
)
from llara.retrieval.runs import read_trec_run
from tests.conftest import WORDS, BagOfWords, write_beir

A = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d1": 1.0}}
B = {"q1": {"d3": 9.0, "d2": 5.0, "d4": 1.0}, "q2": {"d2": 2.0}}


def order(scores):
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def test_rrf_of_two_known_runs_gives_the_hand_computed_scores_and_order():
    fused = reciprocal_rank_fusion([A, B], k=60)
    # d3: ranks 3 and 1; d2: 2 and 2; d1: 1 and absent; d4: absent and 3 (ranx.fuse(method="rrf") agrees)
    assert fused["q1"] == pytest.approx({"d3": 1 / 63 + 1 / 61, "d2": 2 / 62, "d1": 1 / 61, "d4": 1 / 63})
    assert order(fused["q1"]) == ["d3", "d2", "d1", "d4"]
    assert fused["q2"] == pytest.approx({"d1": 1 / 61, "d2": 1 / 61})
    assert fuse(A, B, Fusion("rrf"), k=2)["q1"].keys() == {"d3", "d2"}  # cut to the top k


def test_rrf_ranks_ties_by_document_id_like_the_trec_file():
    fused = reciprocal_rank_fusion([{"q": {"b": 1.0, "a": 1.0}}], k=60)
    assert fused["q"] == {"a": 1 / 61, "b": 1 / 62}


def test_weighted_rrf_by_hand_and_its_ends():
    fused = reciprocal_rank_fusion([A, B], k=60, weights=[0.25, 0.75])
    assert fused["q1"] == pytest.approx({"d3": 0.25 / 63 + 0.75 / 61, "d2": 1 / 62, "d1": 0.25 / 61, "d4": 0.75 / 63})
    # equal weights rank as plain RRF; weight 0 is BM25 alone (dense-only documents after it); 1 is dense alone
    assert order(fuse(A, B, Fusion("rrf", 0.5))["q1"]) == order(fuse(A, B, Fusion("rrf"))["q1"])
    assert order(fuse(A, B, Fusion("rrf", 0.0))["q1"])[:3] == order(A["q1"])
    assert order(fuse(A, B, Fusion("rrf", 1.0))["q1"])[:3] == order(B["q1"])


def test_score_fusion_min_max_weighted_sum_by_hand():
    assert min_max({"x": 2.0, "y": 4.0, "z": 3.0}) == {"x": 0.0, "y": 1.0, "z": 0.5}
    assert min_max({"only": 7.0}) == {"only": 1.0}  # a one-hit list: its hit is its best
    fused = score_fusion([A, B], [0.3, 0.7])
    assert fused["q1"] == pytest.approx({"d1": 0.3, "d2": 0.3 * 0.5 + 0.7 * 0.5, "d3": 0.7, "d4": 0.0})
    assert order(fused["q1"]) == ["d3", "d2", "d1", "d4"]
    # fuse() puts BM25 first: weight is the dense run's
    assert fuse(A, B, Fusion("score", 1.0))["q1"] == pytest.approx({"d3": 1.0, "d2": 0.5, "d4": 0.0, "d1": 0.0})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "rrf", "tune_on": "dev"}, "--tune-on picks a --fusion score weight"),
        ({"method": "auto", "tune_on": "dev"}, "--tune-on picks a --fusion score weight"),
        ({"method": "auto", "weight": 0.3}, "for your own weight use"),
        ({"method": "rrf", "weight": -0.1}, "between 0 and 1"),
        ({"method": "score", "weight": 0.3, "tune_on": "dev"}, "not both"),
        ({"method": "score", "weight": 1.5}, "between 0 and 1"),
        ({"method": "borda"}, "unknown fusion"),
    ],
)
def test_fusion_settings_are_checked(kwargs, message):
    with pytest.raises(LlaraError, match=message):
        Fusion(**kwargs)


def test_fusion_defaults_and_options():
    assert Fusion("score").to_dict() == {"method": "score", "weight": 0.5, "tune_on": None, "weight_source": "default"}
    assert Fusion("score", 0.2).weight_source == "--fusion-weight"
    assert Fusion("rrf").to_dict() == {"method": "rrf", "weight": None, "rrf_k": 60}
    assert Fusion("rrf", 0.3).describe() == "weighted RRF (k=60), dense weight 0.3 (--fusion-weight)"
    assert Fusion().method == fusion_options("hybrid").method == "auto"
    with pytest.raises(ValueError, match="set the weight first"):
        fuse(A, B, Fusion())
    assert fusion_options("dense") is None
    with pytest.raises(LlaraError, match="only apply to --method hybrid"):
        fusion_options("dense", "score")


def test_tune_weight_picks_the_best_weight_on_the_given_judgements():
    qrels = {"q": {"good": 1}}
    bm25 = {"q": {"bad": 10.0, "good": 1.0, "x": 0.5}}  # BM25 has it third
    dense = {"q": {"good": 0.9, "bad": 0.1, "x": 0.0}}  # dense has it first
    weight, grid = tune_weight(bm25, dense, qrels)
    assert len(grid) == 11 and grid["1"] == 1.0 and grid["0"] < 1.0
    # every weight that puts "good" first ties at 1.0; the one nearest 0.5 wins
    best = [w for w, v in grid.items() if v == 1.0]
    assert weight == min((float(w) for w in best), key=lambda w: abs(w - 0.5)) and weight > 0.5


# ------------------------------------------------------------------------------ end to end, small data
@pytest.fixture
def small_beir(tmp_path):
    """40 documents of random WORDS; test queries q0-q5 and dev queries q6-q11, each 4 words of its document."""
    rng = random.Random(0)
    corpus = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS) for _ in range(12))} for i in range(40)]
    queries = [{"_id": f"q{i}", "text": " ".join(rng.sample(corpus[i]["text"].split(), 4))} for i in range(12)]
    judged = [(f"q{i}", f"d{i}", 1) for i in range(12)]
    folder = write_beir(tmp_path / "small", corpus, queries, judged[:6])
    (folder / "qrels" / "dev.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in judged[6:])
    )
    return folder


def test_tuning_uses_only_the_tuning_split(small_beir):
    data = load_beir(small_beir)
    fusion = Fusion("score", tune_on="dev")
    tune = tuning_split(data, fusion)
    assert set(tune.queries) == {f"q{i}" for i in range(6, 12)}
    first = evaluate_hybrid(BagOfWords(), data, fusion, k=20, tune=tune, show_progress_bar=False)
    tuning = first.info["fusion"]["tuning"]
    assert first.info["fusion"]["weight_source"] == "tuned on qrels/dev.tsv" and tuning["queries_also_evaluated"] == 0
    assert tuning["grid"][f"{first.fusion.weight:g}"] == max(tuning["grid"].values())
    assert fusion.weight is None  # the caller's Fusion is left as given

    # other test judgements: the same weight and grid (nothing learned from them), other metrics
    data.qrels = {q: {f"d{(int(q[1:]) + 7) % 40}": 1} for q in data.qrels}
    again = Fusion("score", tune_on="dev")
    second = evaluate_hybrid(BagOfWords(), data, again, k=20, tune=tune, show_progress_bar=False)
    assert second.fusion.weight == first.fusion.weight and second.info["fusion"]["tuning"]["grid"] == tuning["grid"]
    assert second.metrics != first.metrics
    with pytest.raises(LlaraError, match="is the evaluated split"):
        tuning_split(data, Fusion("score", tune_on="test"))


def test_hybrid_run_is_the_fusion_of_the_bm25_and_dense_runs(small_beir):
    data = load_beir(small_beir)
    hybrid = evaluate_hybrid(BagOfWords(), data, Fusion("rrf"), k=20, show_progress_bar=False)
    bm25, dense = evaluate_bm25(data, 20).run, evaluate_dense(BagOfWords(), data, 20).run
    expected = fuse(bm25, dense, Fusion("rrf"), 20)
    assert {q: order(r) for q, r in hybrid.run.items()} == {q: order(r) for q, r in expected.items()}
    # the runs it fused are kept, the evaluated queries' only
    for name, run in (("bm25", bm25), ("dense", dense)):
        assert set(hybrid.components[name]) == set(data.queries)
        assert {q: order(r) for q, r in hybrid.components[name].items()} == {q: order(r) for q, r in run.items()}
    assert set(hybrid.per_query) == set(data.qrels)
    assert hybrid.metrics["nDCG@10"] == pytest.approx(np.mean([v["nDCG@10"] for v in hybrid.per_query.values()]))
    components = hybrid.info["fusion"]["components"]
    assert components["bm25"] == pytest.approx(evaluate_bm25(data, 20).metrics)
    assert hybrid.info["fusion"]["method"] == "rrf" and hybrid.info["fusion"]["rrf_k"] == 60


def test_evaluate_hybrid_cli_writes_fusion_info_and_per_query_scores(tiny_model_dir, small_beir, tmp_path):
    from llara.cli import app

    out = tmp_path / "out"
    args = ["--model", tiny_model_dir, "--precision", "fp32", "--data", small_beir, "--output", out, "--top-k", "20"]
    args += ["--method", "hybrid", "--fusion", "score", "--tune-on", "dev"]
    res = CliRunner().invoke(app, ["evaluate", *map(str, args)])  # in-process: a subprocess costs ~10 s of imports
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    fusion = metrics["info"]["fusion"]
    assert metrics["info"]["method"] == "hybrid" and fusion["method"] == "score" and fusion["tune_on"] == "dev"
    assert fusion["weight_source"] == "tuned on qrels/dev.tsv" and fusion["tuning"]["split"] == "dev"
    assert fusion["tuning"]["grid"][f"{fusion['weight']:g}"] == max(fusion["tuning"]["grid"].values())
    assert set(fusion["components"]) == {"bm25", "dense"}
    info = metrics["info"]  # 40 documents, none longer than the default length; queries counted apart
    assert info["documents_read"] == {
        "long_documents": "split", "documents": 40, "documents_long": 0, "documents_long_share": 0.0, "passages": 40,
        "documents_folded": 0,
    }  # fmt: skip
    assert info["truncated_queries"] == 0 and info["queries_encoded"] > 0
    per_query = json.loads((out / "per_query.json").read_text())
    assert set(per_query) == {f"q{i}" for i in range(6)}
    for m in ("nDCG@10", "RR@10", "R@100"):
        assert metrics[m] == pytest.approx(np.mean([v[m] for v in per_query.values()]))

    # the written run is the fusion, with the recorded weight, of BM25 and the tiny model's dense run
    from llara.inference.encoder import LlaraEncoder

    data = load_beir(small_beir)
    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")
    dense = evaluate_dense(encoder, data, 20, show_progress_bar=False).run
    expected = fuse(evaluate_bm25(data, 20).run, dense, Fusion("score", fusion["weight"]), 20)
    run = read_trec_run(out / "run.trec")
    assert {q: order(r) for q, r in run.items()} == {q: order(r) for q, r in expected.items()}


def test_search_hybrid_and_bm25_with_corpus(tiny_model_dir, small_beir, tmp_path):
    from llara.cli import app

    cli = CliRunner()
    common = ("--model", str(tiny_model_dir), "--precision", "fp32")
    corpus, queries = str(small_beir / "corpus.jsonl"), str(small_beir / "queries.jsonl")
    for args in (
        ("encode", *common, "--corpus", corpus, "--output", str(tmp_path / "emb")),
        ("index", "--embeddings", str(tmp_path / "emb"), "--output", str(tmp_path / "idx")),
    ):
        assert cli.invoke(app, args).exit_code == 0
    runs = {}
    said = {}
    for method, fusion in (("dense", ()), ("bm25", ()), ("hybrid", ("--fusion", "rrf")), ("auto", ())):
        out = tmp_path / f"{method}.trec"
        args = ["search", *common, "--method", method.replace("auto", "hybrid"), "--queries", queries]
        args += ["--output", str(out), "--top-k", "20", *fusion]
        args += ["--index", str(tmp_path / "idx")] * (method != "bm25") + ["--corpus", corpus] * (method != "dense")
        res = cli.invoke(app, args)
        assert res.exit_code == 0, res.output
        said[method] = res.output
        runs[method] = read_trec_run(out)
        assert len(runs[method]) == 12
    expected = fuse(runs["bm25"], runs["dense"], Fusion("rrf"), 20)
    assert {q: order(r) for q, r in runs["hybrid"].items()} == {q: order(r) for q, r in expected.items()}
    # the default hybrid says the weight it chose on weak pairs, with the numbers, and fuses with it
    line = next(x for x in said["auto"].splitlines() if x.startswith("fusion: "))
    assert "held-out weak pairs of the corpus nDCG@10 was BM25" in line, said["auto"]
    assert line.startswith(("fusion: BM25 alone:", "fusion: score fusion, dense weight "))
    weight = 0.0 if line.startswith("fusion: BM25 alone") else float(line.split("dense weight ")[1].split(":")[0])
    expected = fuse(runs["bm25"], runs["dense"], Fusion("score", weight), 20)
    assert {q: order(r)[:10] for q, r in runs["auto"].items()} == {q: order(r)[:10] for q, r in expected.items()}
    res = cli.invoke(app, ["search", "--method", "bm25", "--queries", queries, "--output", str(tmp_path / "x.trec")])
    assert isinstance(res.exception, LlaraError) and "bm25 takes --corpus" in str(res.exception)
