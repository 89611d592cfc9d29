"""Two `bench_fusion_suite.py` outputs of the same models side by side: the dense model and the default
hybrid (`--fusion auto`) of each, per collection, with a paired randomization test (B against A).

    python benchmarks/compare_suite_runs.py OUT/truncated OUT/split

Each hybrid is fused again from the saved runs at the weight its own weak pairs chose (`weigh`), so
the two columns are what `llara evaluate --method hybrid` gives with each way of reading documents.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_fusion_suite import DATA, METRIC, saved_runs  # a sibling script

from llara.calibration import weigh
from llara.comparison import permutation_pvalue
from llara.data.beir import load_beir
from llara.retrieval.fusion import Fusion, fuse
from llara.scoring import per_query_scores


def per_query(run, qrels) -> np.ndarray:
    scores = per_query_scores(run, qrels, (METRIC,))
    return np.array([scores[q][METRIC] for q in sorted(qrels)])


def sides(folder: Path, qrels) -> dict[str, np.ndarray]:
    bm25, dense, weak = saved_runs(folder)
    w = weigh(weak).weight
    auto = fuse(bm25, dense, Fusion("auto", w, weight_source="weak pairs"))
    return {"bm25": per_query(bm25, qrels), "dense": per_query(dense, qrels), "auto": per_query(auto, qrels), "w": w}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    names = [p.name for p in sorted(args.b.iterdir()) if (p / "encoded.json").is_file() and (args.a / p.name).is_dir()]
    lines = [
        f"| collection | BM25 | dense {args.a.name} | dense {args.b.name} | p | auto {args.a.name} | "
        f"auto {args.b.name} | p | weights |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    macro = []
    for name in names:
        qrels = load_beir(DATA / name).qrels
        a, b = sides(args.a / name, qrels), sides(args.b / name, qrels)
        pd, pa = permutation_pvalue(b["dense"], a["dense"])[0], permutation_pvalue(b["auto"], a["auto"])[0]
        bm25 = b["bm25"].mean()
        lines.append(
            f"| {name} | {bm25:.3f} | {a['dense'].mean():.3f} | {b['dense'].mean():.3f} | {pd:.3f} | "
            f"{a['auto'].mean():.3f} ({a['auto'].mean() / bm25:.2f}x) | {b['auto'].mean():.3f} "
            f"({b['auto'].mean() / bm25:.2f}x) | {pa:.3f} | {a['w']:g} / {b['w']:g} |"
        )
        macro.append([b["bm25"].mean(), a["dense"].mean(), b["dense"].mean(), a["auto"].mean(), b["auto"].mean()])
    m = np.mean(macro, axis=0)
    lines.append(
        f"| **macro** | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | | {m[3]:.3f} ({m[3] / m[0]:.2f}x) | "
        f"{m[4]:.3f} ({m[4] / m[0]:.2f}x) | | |"
    )
    print("\n".join(lines))
    (args.b / f"vs-{args.a.name}.json").write_text(json.dumps({"names": names, "macro": m.tolist()}))


if __name__ == "__main__":
    main()
