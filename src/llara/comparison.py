"""`llara compare`: several TREC runs on one set of judgements, each against a baseline, with tests.

Per-query values come from ir-measures (llara.evaluation.per_query_scores) over every judged query;
a query missing from a run scores 0 for it (trec_eval -c), so every run is averaged over the same
queries and the tests stay paired. Queries a run retrieved for but that have no judgements are
ignored.

For each run other than the baseline and each metric:

- the mean difference to the baseline, and wins / ties / losses over queries (a tie: the values
  differ by at most 1e-9, which absorbs float noise from different score orders);
- a two-sided paired randomization test of the mean difference (scipy.stats.permutation_test with
  permutation_type="samples": each query's two values swap places at random, i.e. the sign of its
  difference flips); exact over all 2^n flips when 2^n <= the number of resamples;
- a two-sided paired t-test (scipy.stats.ttest_rel);
- Holm's step-down correction over the (runs - 1) x metrics comparisons, for each test separately:
  it controls the family-wise error rate like Bonferroni and rejects at least as often.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llara import settings
from llara.errors import LlaraError
from llara.retrieval.runs import Run
from llara.settings import option

DEFAULT_METRICS = ("nDCG@10", "RR@10", "R@100")
TIE_TOLERANCE = 1e-9
CORRECTION = "holm"


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given): the i-th smallest of m is multiplied by
    m - i (i from 0), then made non-decreasing along that order, capped at 1."""
    order = np.argsort(pvalues, kind="stable")
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[j]))
        adjusted[j] = running
    return adjusted


def permutation_pvalue(x: np.ndarray, y: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, bool]:
    """Two-sided paired randomization test of mean(x - y) = 0; returns (p, whether it was exact)."""
    from scipy.stats import permutation_test

    if not np.any(x != y):
        return 1.0, True  # all differences 0: every flip gives the observed statistic
    res = permutation_test(
        (x, y),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        batch=max(1, 10_000_000 // len(x)),  # bounds memory: batch x queries floats per step
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue), len(x) < 64 and 2 ** len(x) <= resamples


def t_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test: (t, p). Identical values give t = 0, p = 1 (scipy returns nan)."""
    from scipy.stats import ttest_rel

    d = x - y
    if np.all(d == d[0]):  # zero variance: scipy divides 0 by 0 (nan) or d by 0 (inf)
        return (0.0, 1.0) if d[0] == 0 else (float(np.sign(d[0]) * np.inf), 0.0)
    res = ttest_rel(x, y)
    return float(res.statistic), float(res.pvalue)


@dataclass
class RunScores:
    label: str
    path: str
    retrieved: int  # judged queries the run has at least one result for
    per_query: dict[str, dict[str, float]]  # query -> metric -> value (0 where the run lacks the query)
    means: dict[str, float] = field(default_factory=dict)


def labels_for(paths: list[Path]) -> list[str]:
    """Each path's shortest tail that no other path ends with, after dropping a file name they all
    share: bm25/run.trec and dense/run.trec are "bm25" and "dense"; beside them x/score.trec is "score.trec"."""
    parts = [p.resolve().parts for p in paths]
    if len(set(parts)) < len(parts):
        raise LlaraError(f"the same run is given twice: {', '.join(map(str, paths))}")
    if len({p[-1] for p in parts}) == 1 and all(len(p) > 2 for p in parts):
        parts = [p[:-1] for p in parts]
    labels = []
    for i, mine in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != i]
        n = next(n for n in range(1, len(mine) + 1) if all(p[-n:] != mine[-n:] for p in others))
        labels.append("/".join(mine[-n:]))
    return labels


def parse_metrics(text: str) -> list[str]:
    import ir_measures

    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise LlaraError("--metrics: no metric given")
    canonical = []
    for name in names:
        try:
            canonical.append(str(ir_measures.parse_measure(name)))  # the spelling ir-measures reports
        except (ValueError, NameError, TypeError, AttributeError):
            raise LlaraError(f"--metrics: unknown metric {name!r} (ir-measures names: nDCG@10, RR@10, R@100)") from None
    return canonical


@dataclass(frozen=True)
class CompareOptions:
    """What `llara compare` takes."""

    runs: list[Path] = option(
        help="TREC run files (e.g. OUT/run.trec of `llara evaluate`)", factory=list, required=True, argument=True
    )
    qrels: Path | None = option(
        None, "judgements: BEIR qrels TSV (query-id corpus-id score) or TREC qrels", required=True
    )
    metrics: list[str] = settings.metrics(DEFAULT_METRICS, parse=parse_metrics)
    baseline: Path | None = option(None, "the run the others are compared with (default: first)")
    output: Path | None = option(None, "JSON file for the table, p-values and settings")
    permutations: int = option(10_000, "randomization test resamples (exact if 2^queries <= it)")
    alpha: float = option(0.05, "significance level for the * marker (Holm-corrected)")
    seed: int = settings.seed(0)


def compare_runs(
    runs: list[str | Path],
    qrels_path: str | Path,
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
    baseline: str | Path | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Score each run, compare each with the baseline (default: the first run); the result is what
    `llara compare --output` writes as JSON."""
    from llara.data.beir import read_qrels
    from llara.retrieval.runs import read_trec_run
    from llara.scoring import per_query_scores

    paths = [Path(r) for r in runs]
    if baseline is not None:
        base = Path(baseline)
        found = [i for i, p in enumerate(paths) if p.resolve() == base.resolve()]
        paths = [base] + [p for i, p in enumerate(paths) if i not in found]  # the baseline first
    if len(paths) < 2:
        raise LlaraError("give at least two runs to compare (or one run and --baseline)")
    if resamples < 1:
        raise LlaraError(f"--permutations must be at least 1, got {resamples}")
    qrels = read_qrels(qrels_path)
    names = parse_metrics(",".join(metrics))
    scored: list[RunScores] = []
    for label, path in zip(labels_for(paths), paths, strict=True):
        run: Run = read_trec_run(path)
        if not run:
            raise LlaraError("run file has no results", path)
        per_query = per_query_scores(run, qrels, names)
        scored.append(RunScores(label, str(path), sum(1 for q in qrels if run.get(q)), per_query))
    queries = list(qrels)
    values = {s.label: {m: np.array([s.per_query[q][m] for q in queries]) for m in names} for s in scored}
    for s in scored:
        s.means = {m: float(values[s.label][m].mean()) for m in names}

    base_scores, others = scored[0], scored[1:]
    comparisons = []
    for s in others:
        for m in names:
            x, y = values[s.label][m], values[base_scores.label][m]
            d = x - y
            p_perm, exact = permutation_pvalue(x, y, resamples, seed)
            t, p_t = t_test(x, y)
            comparisons.append(
                {
                    "run": s.label,
                    "metric": m,
                    "delta": float(d.mean()),
                    "wins": int((d > TIE_TOLERANCE).sum()),
                    "ties": int((np.abs(d) <= TIE_TOLERANCE).sum()),
                    "losses": int((d < -TIE_TOLERANCE).sum()),
                    "p_permutation": p_perm,
                    "permutation_exact": exact,
                    "t": t,
                    "p_t": p_t,
                }
            )
    for test in ("p_permutation", "p_t"):
        for c, adjusted in zip(comparisons, holm([c[test] for c in comparisons]), strict=True):
            c[f"{test}_{CORRECTION}"] = adjusted
    for c in comparisons:
        c["significant"] = c[f"p_permutation_{CORRECTION}"] < alpha

    return {
        "qrels": str(qrels_path),
        "queries": len(queries),
        "metrics": names,
        "baseline": base_scores.label,
        "missing_queries": "a judged query missing from a run scores 0 for it (trec_eval -c)",
        "tests": {
            "permutation": {
                "what": "two-sided paired randomization test of the mean difference (sign flips), "
                "scipy.stats.permutation_test(permutation_type='samples')",
                "resamples": resamples,
                "seed": seed,
                "exact_when": "2^queries <= resamples",
            },
            "t": {"what": "two-sided paired t-test, scipy.stats.ttest_rel"},
        },
        "correction": {
            "method": CORRECTION,
            "family": f"{len(comparisons)} comparisons ({len(others)} runs x {len(names)} metrics) against the "
            "baseline, for each test separately",
        },
        "alpha": alpha,
        "significant_means": f"Holm-corrected permutation p < {alpha}",
        "runs": [
            {"label": s.label, "path": s.path, "queries_retrieved": s.retrieved, "metrics": s.means} for s in scored
        ],
        "comparisons": comparisons,
    }
