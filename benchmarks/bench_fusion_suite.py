"""Fusion rules on the development suite, no labels: which hybrid never loses to BM25 (issue 26 item 2).

For each collection of ../shared/data: optionally the no-label pipeline at the CLI defaults (`llara
pairs`, `llara pretrain --max-time P`, `llara finetune --max-time F`, each run as the command a user
types), then BM25 and the dense model retrieve the judged queries, and every fusion rule fuses the
same two runs:

  rrf          equal-weight reciprocal rank fusion (k = 60), the default before issue 26
  auto         weighted RRF, the dense weight chosen on held-out weak pairs (`--fusion auto`, the default)
  auto-gated   auto, but BM25 alone unless the chosen fusion beats BM25 on the weak pairs (p < 0.05)
  score-weak   min-max score fusion, its weight chosen on the same weak pairs
  oracle       weighted RRF at the weight best on the test judgements: an upper bound, never a default

Each rule and the dense model against BM25: the mean nDCG@10 and a two-sided paired randomization test
over the collection's queries (llara.comparison). Macro averages over the collections. Also the
weak-pair signal (dense vs BM25 on the weak pairs) beside the real one, to see how far it tracks.

    python benchmarks/bench_fusion_suite.py --out /tmp/fusion-raw                      # the raw model
    python benchmarks/bench_fusion_suite.py --out /tmp/fusion-3x3 --pretrain-minutes 3 --finetune-minutes 3

Writes OUT/suite.json and OUT/suite.md; a collection already in OUT/<name>/result.json is reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from llara.calibration import WEIGHTS, measure_on_weak_pairs, weigh
from llara.comparison import permutation_pvalue
from llara.data.beir import load_beir
from llara.evaluation import evaluate_bm25
from llara.inference.encoder import LlaraEncoder
from llara.retrieval.dense import exact_search
from llara.retrieval.fusion import Fusion, fuse
from llara.scoring import mean_scores, per_query_scores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SUITE = ("cisi", "medline", "cacm", "lisa", "time", "adi")
METRIC = "nDCG@10"
RULES = ("rrf", "auto", "auto-gated", "score-weak", "oracle")


def llara(*args: str) -> float:
    """Run one llara command as a user would; its wall-clock minutes."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llara", *args], check=True)
    return (time.perf_counter() - t) / 60


def train(name: str, folder: Path, pretrain_minutes: float, finetune_minutes: float) -> tuple[str, dict]:
    """The no-label pipeline at the CLI defaults; the fine-tuned model's folder and each command's minutes."""
    corpus = str(DATA / name / "corpus.jsonl")
    pairs, pt, ft = folder / "pairs.jsonl", folder / "pretrained", folder / "finetuned"
    minutes = {}
    if not (ft / "llara.json").is_file():
        minutes["pairs"] = llara("pairs", "--corpus", corpus, "--output", str(pairs))
        minutes["pretrain"] = llara(
            "pretrain", "--corpus", corpus, "--output", str(pt), "--max-time", f"{pretrain_minutes}"
        )
        minutes["finetune"] = llara(
            "finetune",
            "--model",
            str(pt),
            "--train",
            str(pairs),
            "--output",
            str(ft),
            "--max-time",
            f"{finetune_minutes}",
        )
    return str(ft), minutes


def collection(name: str, model: str, k: int = 1000) -> dict:
    data = load_beir(DATA / name)
    encoder = LlaraEncoder.from_pretrained(model)
    t = time.perf_counter()
    bm25 = evaluate_bm25(data, k).run
    dense, timings, encoded = exact_search(encoder, data.corpus, data.queries, k)
    weak_runs = measure_on_weak_pairs(data.corpus, encoder, encoded.search, encoded.doc_ids)
    weak = weigh(weak_runs)
    seconds = time.perf_counter() - t

    def per_query(run) -> np.ndarray:
        scores = per_query_scores(run, data.qrels, (METRIC,))
        return np.array([scores[q][METRIC] for q in sorted(data.qrels)])

    def weak_score(run) -> np.ndarray:
        scores = per_query_scores(run, weak_runs.qrels, (METRIC,))
        return np.array([scores[q][METRIC] for q in sorted(weak_runs.qrels)])

    # auto-gated: BM25 alone unless the chosen fusion beats BM25 on the weak pairs, significantly
    chosen = weak_score(fuse(weak_runs.bm25, weak_runs.dense, Fusion("rrf", weak.weight), 100))
    p_weak, _ = permutation_pvalue(chosen, weak_score(weak_runs.bm25))
    gated = weak.weight if chosen.mean() > weak.bm25 and p_weak < 0.05 else 0.0
    # score fusion: its weight picked on the same weak pairs (ties: the smaller weight)
    score_grid = {
        w: mean_scores(
            per_query_scores(
                fuse(weak_runs.bm25, weak_runs.dense, Fusion("score", w), 100), weak_runs.qrels, (METRIC,)
            ),
            (METRIC,),
        )[METRIC]
        for w in WEIGHTS
    }
    score_w = min(WEIGHTS, key=lambda w: (-round(score_grid[w], 12), w))
    oracle_grid = {w: per_query(fuse(bm25, dense, Fusion("rrf", w), k)).mean() for w in WEIGHTS}
    oracle_w = min(WEIGHTS, key=lambda w: (-round(oracle_grid[w], 12), w))

    runs = {
        "bm25": bm25,
        "dense": dense,
        "rrf": fuse(bm25, dense, Fusion("rrf"), k),
        "auto": fuse(bm25, dense, Fusion("rrf", weak.weight), k),
        "auto-gated": fuse(bm25, dense, Fusion("rrf", gated), k),
        "score-weak": fuse(bm25, dense, Fusion("score", score_w), k),
        "oracle": fuse(bm25, dense, Fusion("rrf", oracle_w), k),
    }
    base = per_query(bm25)
    rows = {}
    for rule, run in runs.items():
        x = per_query(run)
        p = permutation_pvalue(x, base)[0] if rule != "bm25" else None
        rows[rule] = {"mean": float(x.mean()), "vs_bm25": float(x.mean() / max(base.mean(), 1e-9)), "p": p}
    return {
        "collection": name,
        "queries": len(data.qrels),
        "documents": len(data.corpus),
        "rows": rows,
        "weights": {"auto": weak.weight, "auto-gated": gated, "score-weak": score_w, "oracle": oracle_w},
        "weak_pairs": {
            **weak.to_dict(),
            "p_fused_vs_bm25": p_weak,
            "score_grid": {f"{w:g}": v for w, v in score_grid.items()},
        },
        "oracle_grid": {f"{w:g}": float(v) for w, v in oracle_grid.items()},
        "evaluate_seconds": seconds,
        "encode_corpus_s": timings["encode_corpus_s"],
    }


def markdown(results: list[dict], title: str) -> str:
    cols = ["bm25", "dense", *RULES]
    lines = [
        f"### {title}",
        "",
        "| collection | q | " + " | ".join(cols) + " | auto weight | weak pairs BM25 / dense |",
    ]
    lines.append("|---" * (len(cols) + 4) + "|")
    for r in results:
        cells = []
        for c in cols:
            row = r["rows"][c]
            mark = "" if row["p"] is None else ("*" if row["p"] < 0.05 else "")
            cells.append(f"{row['mean']:.3f}{mark}" + ("" if c == "bm25" else f" ({row['vs_bm25']:.2f}x)"))
        w = r["weak_pairs"]
        lines.append(
            f"| {r['collection']} | {r['queries']} | "
            + " | ".join(cells)
            + f" | {r['weights']['auto']:g} | {w['bm25']:.3f} / {w['dense']:.3f} |"
        )
    macro = {c: float(np.mean([r["rows"][c]["mean"] for r in results])) for c in cols}
    lines.append(
        "| **macro** | | "
        + " | ".join(f"{macro[c]:.3f}" + ("" if c == "bm25" else f" ({macro[c] / macro['bm25']:.2f}x)") for c in cols)
        + " | | |"
    )
    worse = {
        c: sum(
            r["rows"][c]["p"] is not None
            and r["rows"][c]["p"] < 0.05
            and r["rows"][c]["mean"] < r["rows"]["bm25"]["mean"]
            for r in results
        )
        for c in cols[1:]
    }
    lines += [
        "",
        "Significantly worse than BM25 (p < 0.05) on: "
        + ", ".join(f"{c} {n}" for c, n in worse.items())
        + " collections.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="smollm2", help="the model to evaluate when not training")
    ap.add_argument(
        "--pretrain-minutes", type=float, default=None, help="train per collection (with --finetune-minutes)"
    )
    ap.add_argument("--finetune-minutes", type=float, default=None)
    ap.add_argument("--collections", default=",".join(SUITE))
    args = ap.parse_args()
    results = []
    for name in args.collections.split(","):
        folder = args.out / name
        saved = folder / "result.json"
        if not saved.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            model, minutes = args.model, {}
            if args.pretrain_minutes is not None:
                model, minutes = train(name, folder, args.pretrain_minutes, args.finetune_minutes)
            result = collection(name, model) | {"model": model, "training_minutes": minutes}
            saved.write_text(json.dumps(result, indent=1))
        results.append(json.loads(saved.read_text()))
        r = results[-1]
        print(name, {c: round(v["mean"], 3) for c, v in r["rows"].items()}, "weights", r["weights"], flush=True)
    trained = (
        f"pretrain {args.pretrain_minutes} + finetune {args.finetune_minutes} min"
        if args.pretrain_minutes
        else args.model
    )
    md = markdown(results, f"nDCG@10, {trained}; * p < 0.05 vs BM25 (paired randomization, 10,000 resamples)")
    (args.out / "suite.json").write_text(json.dumps(results, indent=1))
    (args.out / "suite.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
