"""`llara evaluate` over several BEIR folders: a suite judged as one, as BEIR reports are read.

Each collection is read, evaluated and let go before the next (one in memory at a time), the model
loaded once for all. On each, BM25 is run beside the method, and the method is tested against it over
the collection's queries (llara.comparison: paired randomization and t-tests, Holm over the suite's
metrics). The report has one row per collection and the macro average (the unweighted mean over
collections, each collection counting once whatever its size), and counts the collections where the
method is significantly better or worse than BM25. Written as OUTPUT/suite.json and OUTPUT/suite.md;
each run in OUTPUT/<collection>/<method>/ (run.trec, metrics.json, per_query.json).
"""

from __future__ import annotations

from pathlib import Path

from llara.errors import LlaraError

SUITE_METRICS = ("nDCG@10", "R@100")  # the table's metrics, each tested against BM25 on each collection


def collection_names(folders: list[Path]) -> list[str]:
    """Each folder's name, which names its output folder and its row: two folders of one name are refused."""
    names = [Path(f).resolve().name for f in folders]
    for name in names:
        if names.count(name) > 1:
            raise LlaraError(f"two dataset folders are named {name!r}: each collection needs its own name", name)
    return names


def compare_with_bm25(output: Path, qrels: Path, method: str) -> dict:
    """The method's run against BM25's on one collection (both written under `output`)."""
    from llara.comparison import compare_runs

    runs = [output / "bm25" / "run.trec", output / method / "run.trec"]
    return compare_runs(runs, qrels, SUITE_METRICS, baseline=runs[0])


def collection_row(name: str, stats: dict, bm25: dict, method: dict, compared: dict | None) -> dict:
    """One collection's row: both metric sets and, per metric, the method's test against BM25."""
    versus = None
    if compared is not None:
        versus = {
            c["metric"]: {k: v for k, v in c.items() if k not in ("run", "metric")} for c in compared["comparisons"]
        }
    return {"collection": name, **stats, "bm25": bm25, "method": method, "vs_bm25": versus}


def suite_report(method: str, model: str | None, split: str, rows: list[dict]) -> dict:
    """The suite as one: every collection's row, the macro average of each metric, and where the
    method is significantly better or worse than BM25 (Holm-corrected randomization p < alpha)."""
    macro = {side: {m: sum(r[side][m] for r in rows) / len(rows) for m in SUITE_METRICS} for side in ("bm25", "method")}
    tally = {}
    for m in SUITE_METRICS:
        tests = [r["vs_bm25"][m] for r in rows if r["vs_bm25"] is not None]
        tally[m] = {
            "better": sum(t["significant"] and t["delta"] > 0 for t in tests),
            "worse": sum(t["significant"] and t["delta"] < 0 for t in tests),
            "collections": len(tests),
        }
    return {
        "method": method,
        "model": model,
        "split": split,
        "metrics": list(SUITE_METRICS),
        "collections": rows,
        "macro": {**macro, "ratio": {m: macro["method"][m] / max(macro["bm25"][m], 1e-12) for m in SUITE_METRICS}},
        "significant": tally,
        "tests": "two-sided paired randomization (10000 sign flips) per collection, Holm over its metrics",
    }
