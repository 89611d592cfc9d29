"""Which rule turns the weak-pair measurement into the hybrid's dense weight (issue 26 item 2).

Reads the runs `bench_fusion_suite.py` saved (judged queries and held-out weak pairs, BM25 and dense,
for each collection and each model) and scores, for every case, weighted RRF at each dense weight on
the judged queries. Rules compared, every one of them reported:

  bm25          weight 0
  rrf           weight 0.5 (equal-weight RRF)
  auto          the weight best on the weak pairs (`--fusion auto`, the default)
  guard-T       0.5, or 0 (BM25 alone) where the dense model's weak-pair nDCG@10 is below T x BM25's
  fixed-W       weight W whatever the pairs say
  W+guard       weight W, or 0 below the guard T: (W, T) chosen leave-one-collection-out
  oracle        the weight best on the judged queries: an upper bound, never a rule

Settings chosen leave-one-collection-out: for each collection, the setting with the best mean ratio
to BM25 over the other collections (all models), then applied to it. So no collection's judgements
choose its own setting.

    python benchmarks/bench_fusion_rules.py OUT/fusion-3x3 OUT/fusion-raw
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from bench_fusion_suite import saved_runs  # a sibling script: benchmarks/ is on sys.path

from llara.calibration import WEIGHTS, weigh
from llara.comparison import permutation_pvalue
from llara.data.beir import load_beir
from llara.retrieval.fusion import Fusion, fuse
from llara.scoring import per_query_scores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FIXED = (0.1, 0.2, 0.3, 0.4)


def case(folder: Path) -> dict:
    """One collection x model: nDCG@10 per query at each dense weight, and the weak-pair evidence."""
    data = load_beir(DATA / folder.name)
    bm25, dense, weak_runs = saved_runs(folder)
    weak = weigh(weak_runs)

    def per_query(run) -> np.ndarray:
        scores = per_query_scores(run, data.qrels, ("nDCG@10",))
        return np.array([scores[q]["nDCG@10"] for q in sorted(data.qrels)])

    grid = {w: per_query(fuse(bm25, dense, Fusion("rrf", w), 1000)) for w in WEIGHTS}
    return {
        "collection": folder.name,
        "model": folder.parent.name,
        "grid": grid,
        "dense": per_query(dense),
        "ratio": weak.dense / max(weak.bm25, 1e-9),
        "weak": weak,
    }


def guard(c: dict, t: float, w: float = 0.5) -> float:
    return 0.0 if c["ratio"] < t else w


def main() -> None:
    cases = [case(f) for root in sys.argv[1:] for f in sorted(Path(root).iterdir()) if (f / "encoded.json").is_file()]
    collections = sorted({c["collection"] for c in cases})

    def gain(c: dict, w: float) -> float:
        return c["grid"][w].mean() / max(c["grid"][0.0].mean(), 1e-9)

    chosen_t, chosen_wt = {}, {}
    pairs = [(w, t) for w in (*FIXED, 0.5) for t in (0.0, *THRESHOLDS)]
    for name in collections:
        others = [c for c in cases if c["collection"] != name]
        chosen_t[name] = max(THRESHOLDS, key=lambda t: (np.mean([gain(c, guard(c, t)) for c in others]), -t))
        chosen_wt[name] = max(
            pairs, key=lambda wt: (np.mean([gain(c, guard(c, wt[1], wt[0])) for c in others]), -wt[1])
        )
    rules = {
        "bm25": lambda c: 0.0,
        "rrf": lambda c: 0.5,
        "auto": lambda c: c["weak"].weight,
        "guard (T left out)": lambda c: guard(c, chosen_t[c["collection"]]),
        **{f"guard-{t:g}": (lambda c, t=t: guard(c, t)) for t in THRESHOLDS},
        **{f"fixed-{w:g}": (lambda c, w=w: w) for w in FIXED},
        "W+guard (left out)": lambda c: guard(c, chosen_wt[c["collection"]][1], chosen_wt[c["collection"]][0]),
        "oracle": lambda c: max(WEIGHTS, key=lambda w: (c["grid"][w].mean(), -w)),
    }
    header = "| collection | model | weak dense/BM25 | BM25 | dense | " + " | ".join(rules) + " |"
    lines = [header, "|---" * (5 + len(rules)) + "|"]
    totals = {r: [] for r in rules}
    worse = dict.fromkeys(rules, 0)
    for c in cases:
        base = c["grid"][0.0]
        cells = [c["collection"], c["model"], f"{c['ratio']:.2f}", f"{base.mean():.3f}", f"{c['dense'].mean():.3f}"]
        for name, rule in rules.items():
            w = rule(c)
            x = c["grid"][w]
            p = permutation_pvalue(x, base)[0] if w != 0.0 else 1.0
            star = "*" if p < 0.05 else ""
            worse[name] += p < 0.05 and x.mean() < base.mean()
            totals[name].append(x.mean() / max(base.mean(), 1e-9))
            cells.append(f"{x.mean():.3f}{star} (w {w:g})")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "| **mean ratio to BM25** | | | | | " + " | ".join(f"{np.mean(v):.3f}x" for v in totals.values()) + " |"
    )
    lines.append("| **significantly worse than BM25** | | | | | " + " | ".join(str(worse[r]) for r in rules) + " |")
    lines += [
        "",
        "Thresholds chosen leaving each collection out: " + ", ".join(f"{n} {t:g}" for n, t in chosen_t.items()),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
