"""`llara compare`: p-values checked against independent computations, the comparison's contents on
runs written here, and bad input (file:line, exit code 2)."""

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from llara.cli import app
from llara.comparison import compare_runs, holm, labels_for, permutation_pvalue, t_test
from llara.errors import LlaraError
from llara.retrieval.runs import write_trec_run
from tests.conftest import run_cli


def exact_sign_flip_pvalue(d: np.ndarray) -> float:
    """All 2^n sign flips of the paired differences: the share whose |mean| reaches the observed one."""
    observed = abs(d.mean())
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    return float(np.mean(np.abs((flips * d).mean(axis=1)) >= observed - 1e-12))


def test_randomization_pvalue_is_the_exact_sign_flip_enumeration():
    rng = np.random.default_rng(3)
    x, y = rng.random(11), rng.random(11)
    p, exact = permutation_pvalue(x, y, resamples=10_000)
    assert exact and p == pytest.approx(exact_sign_flip_pvalue(x - y), abs=1e-12)
    x[:10] += 1.0  # a real difference: a small p, still exact
    p, exact = permutation_pvalue(x, y, resamples=10_000)
    assert exact and p == pytest.approx(exact_sign_flip_pvalue(x - y), abs=1e-12) and p < 0.05


def test_randomization_pvalue_sampled_when_2n_exceeds_resamples():
    rng = np.random.default_rng(4)
    x, y = rng.random(16), rng.random(16) - 0.15
    p, exact = permutation_pvalue(x, y, resamples=5000, seed=1)
    assert not exact and p == pytest.approx(exact_sign_flip_pvalue(x - y), abs=0.02)
    assert permutation_pvalue(x, y, resamples=5000, seed=1)[0] == p  # seeded: reproducible
    assert permutation_pvalue(x, x, resamples=5000) == (1.0, True)


def test_t_test_matches_the_textbook_formula():
    rng = np.random.default_rng(5)
    x, y = rng.random(30), rng.random(30)
    d = x - y
    t_hand = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p_hand = 2 * stats.t.sf(abs(t_hand), df=len(d) - 1)
    t, p = t_test(x, y)
    assert t == pytest.approx(t_hand, rel=1e-12) and p == pytest.approx(p_hand, rel=1e-9)
    assert t_test(x, x) == (0.0, 1.0)  # scipy would say nan


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> made monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_labels_tell_runs_apart(tmp_path):
    assert labels_for([tmp_path / "bm25" / "run.trec", tmp_path / "dense" / "run.trec"]) == ["bm25", "dense"]
    assert labels_for([tmp_path / "a.trec", tmp_path / "b.trec"]) == ["a.trec", "b.trec"]
    assert labels_for([tmp_path / "x" / "a" / "r.trec", tmp_path / "y" / "a" / "r.trec"]) == ["x/a", "y/a"]
    mixed = [tmp_path / "bm25" / "run.trec", tmp_path / "dense" / "run.trec", tmp_path / "score.trec"]
    assert labels_for(mixed) == ["bm25/run.trec", "dense/run.trec", "score.trec"]
    with pytest.raises(LlaraError, match="given twice"):
        labels_for([tmp_path / "a.trec", tmp_path / "a.trec"])


QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}


@pytest.fixture
def runs(tmp_path):
    """base: the relevant document first for q1-q3, second for q4. better: first for q1, q2, q4; q3
    missing (scores 0); an unjudged query q9 (ignored)."""
    write_trec_run(
        tmp_path / "base" / "run.trec",
        {
            "q1": {"d1": 2.0, "x": 1.0},
            "q2": {"d2": 2.0, "x": 1.0},
            "q3": {"d3": 2.0, "x": 1.0},
            "q4": {"x": 2.0, "d4": 1.0},
        },
    )
    write_trec_run(
        tmp_path / "better" / "run.trec",
        {"q1": {"d1": 2.0}, "q2": {"d2": 2.0}, "q4": {"d4": 2.0, "x": 1.0}, "q9": {"d1": 1.0}},
    )
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, j in QRELS.items() for d in j)
    )
    return tmp_path


def test_compare_contents(runs):
    result = compare_runs([runs / "base" / "run.trec", runs / "better" / "run.trec"], runs / "qrels.tsv", ["RR@10"])
    assert result["baseline"] == "base" and result["queries"] == 4 and result["correction"]["method"] == "holm"
    base, better = result["runs"]
    assert base["metrics"]["RR@10"] == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert better["metrics"]["RR@10"] == pytest.approx((1 + 1 + 0 + 1) / 4)  # q3 missing: 0, q9 ignored
    assert better["queries_retrieved"] == 3
    (c,) = result["comparisons"]
    assert (c["run"], c["metric"], c["wins"], c["ties"], c["losses"]) == ("better", "RR@10", 1, 2, 1)
    assert c["delta"] == pytest.approx(-0.5 / 4)
    assert c["p_permutation"] == pytest.approx(exact_sign_flip_pvalue(np.array([0, 0, -1, 0.5])))
    assert c["permutation_exact"] and c["p_permutation_holm"] == c["p_permutation"]  # one comparison
    assert not c["significant"]

    # --baseline: that run first, the others against it; two metrics -> Holm over 2 comparisons
    result = compare_runs(
        [runs / "base" / "run.trec", runs / "better" / "run.trec"],
        runs / "qrels.tsv",
        ["RR@10", "nDCG@10"],
        baseline=runs / "better" / "run.trec",
    )
    assert result["baseline"] == "better" and result["metrics"] == ["RR@10", "nDCG@10"]
    rr, ndcg = result["comparisons"]
    assert rr["run"] == "base" and rr["delta"] == pytest.approx(0.5 / 4) and (rr["wins"], rr["losses"]) == (1, 1)
    assert rr["p_t_holm"] == pytest.approx(min(1.0, 2 * min(rr["p_t"], ndcg["p_t"])))


def test_compare_cli_table_and_json_then_bad_input_exits_2(runs):
    out = runs / "cmp.json"
    files = [runs / "base" / "run.trec", runs / "better" / "run.trec"]
    args = [*files, "--qrels", runs / "qrels.tsv", "--metrics", "RR@10,R@100", "--output", out]
    res = CliRunner().invoke(app, ["compare", *map(str, args)], env={"COLUMNS": "160"})  # in-process: faster
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert [r["label"] for r in result["runs"]] == ["base", "better"] and len(result["comparisons"]) == 2
    assert "Holm" in res.stdout and "better" in res.stdout and "1/2/1" in res.stdout

    # bad input, as a user meets it: one line naming the file and line, exit code 2

    (runs / "bad.trec").write_text("q1 Q0 d1 1 2.0 t\nq2 Q0 d2 1 high t\n")
    res = run_cli("compare", files[0], runs / "bad.trec", "--qrels", runs / "qrels.tsv")
    assert res.returncode == 2 and "bad.trec:2: field 'score': not a number" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nope.trec", "nope.trec: file not found"),
        (lambda d: (d / "short.trec").write_text("q1 Q0 d1 1\n") and d / "short.trec", "short.trec:1: expected 6"),
        (lambda d: (d / "empty.trec").write_text("\n") and d / "empty.trec", "empty.trec: run file has no results"),
    ],
)
def test_bad_runs_name_the_file_and_line(runs, make, message):
    with pytest.raises(LlaraError, match=message):
        compare_runs([runs / "base" / "run.trec", make(runs)], runs / "qrels.tsv")


def test_qrels_in_trec_format_space_separated(runs):
    (runs / "qrels.trec").write_text("".join(f"{q} 0 {d} 1\n" for q, j in QRELS.items() for d in j))
    files = [runs / "base" / "run.trec", runs / "better" / "run.trec"]
    assert compare_runs(files, runs / "qrels.trec") == {
        **compare_runs(files, runs / "qrels.tsv"),
        "qrels": str(runs / "qrels.trec"),
    }
    (runs / "bad.tsv").write_text("q1\td1\t1\nq2\td2\n")
    with pytest.raises(LlaraError, match=r"bad.tsv:2: expected 3 tab-separated columns"):
        compare_runs(files, runs / "bad.tsv")
    with pytest.raises(LlaraError, match="unknown metric 'P@x'"):
        compare_runs(files, runs / "qrels.tsv", ["P@x"])
