"""Fusion rules on the development suite, no labels: which hybrid never loses to BM25 (issue 26 item 2).

For each collection of ../shared/data: optionally the no-label pipeline at the CLI defaults (`llara
pairs`, `llara pretrain --max-time P`, `llara finetune --max-time F`, each run as the command a user
types), then BM25 and the dense model retrieve the judged queries, and every fusion rule fuses the
same two runs:

  rrf           equal-weight reciprocal rank fusion (k = 60), the default before issue 26
  rrf-weak      weighted RRF at the dense weight that fuses best on held-out weak pairs of the corpus
                (`--fusion auto` until 2026-12-05)
  auto          `--fusion auto`, the default: min-max score fusion at the dense weight that fuses best
                on the same weak pairs (llara.calibration)
  auto-gated    auto, but BM25 alone unless it beats BM25 on the weak pairs (p < 0.05)
  oracle        score fusion at the weight best on the test judgements: an upper bound, never a default

Each rule and the dense model against BM25: the mean nDCG@10 and a two-sided paired randomization test
over the collection's queries (llara.comparison). Macro averages over the collections. Also the
weak-pair signal (dense vs BM25 on the weak pairs) beside the real one, to see how far it tracks.

    python benchmarks/bench_fusion_suite.py --out OUT/fusion-raw                      # the raw model
    python benchmarks/bench_fusion_suite.py --out OUT/fusion-3x3 --pretrain-minutes 3 --finetune-minutes 3
    python benchmarks/bench_fusion_suite.py --out OUT/again --models OUT/fusion-3x3   # the same models again
    python benchmarks/bench_fusion_suite.py --out OUT/adapted --models OUT/fusion-3x3 --stage pretrained
    # fine-tuned from the raw model on the same pairs (no adaptation):
    python benchmarks/bench_fusion_suite.py --out OUT/from-raw --models OUT/fusion-3x3 \
        --pretrain-minutes 0 --finetune-minutes 3

`--data DIR` reads the collections from DIR instead of ../shared/data (e.g. a transformed copy).
`--long-documents split` (the default, as llara's) or `truncate` says how documents longer than the
passage length are read, for the judged queries and the weak pairs alike.

Writes each collection's runs (judged queries and weak pairs) to OUT/<name>/, then OUT/suite.json and
OUT/suite.md; a collection whose runs are there (OUT/<name>/encoded.json) is not encoded again, only
fused, so a new rule costs seconds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from llara.calibration import WEIGHTS, WeakPairRuns, measure_on_weak_pairs, weigh
from llara.comparison import permutation_pvalue
from llara.data.beir import load_beir
from llara.evaluation import evaluate_bm25
from llara.inference.encoder import LlaraEncoder
from llara.retrieval.dense import exact_search
from llara.retrieval.fusion import Fusion, fuse
from llara.retrieval.runs import Run, read_trec_run, write_trec_run
from llara.scoring import per_query_scores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SUITE = ("cisi", "medline", "cacm", "lisa", "time", "adi")
METRIC = "nDCG@10"
RULES = ("rrf", "rrf-weak", "auto", "auto-gated", "oracle")


def llara(*args: str) -> float:
    """Run one llara command as a user would; its wall-clock minutes."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llara", *args], check=True)
    return (time.perf_counter() - t) / 60


def train(
    name: str,
    folder: Path,
    pretrain_minutes: float,
    finetune_minutes: float,
    base: str = "smollm2",
    finetune_args: tuple[str, ...] = (),
) -> tuple[str, dict]:
    """The no-label pipeline at the CLI defaults; the fine-tuned model's folder and each command's minutes.
    With `pretrain_minutes` 0 the model is fine-tuned from `base` itself (the paper's "fine-tuned from the
    raw model" row), on the same pairs."""
    corpus = str(DATA / name / "corpus.jsonl")
    pairs, pt, ft = folder / "pairs.jsonl", folder / "pretrained", folder / "finetuned"
    minutes = {}
    if not (ft / "llara.json").is_file():
        if not pairs.is_file():
            minutes["pairs"] = llara("pairs", "--corpus", corpus, "--output", str(pairs))
        start = base
        if pretrain_minutes:
            minutes["pretrain"] = llara(
                "pretrain",
                "--model",
                base,
                "--corpus",
                corpus,
                "--output",
                str(pt),
                "--max-time",
                f"{pretrain_minutes}",
            )
            start = str(pt)
        minutes["finetune"] = llara(
            "finetune",
            "--model",
            start,
            "--train",
            str(pairs),
            "--output",
            str(ft),
            "--max-time",
            f"{finetune_minutes}",
            *finetune_args,
        )
    return str(ft), minutes


def encode_runs(
    name: str, model: str, folder: Path, long_documents: str, k: int = 1000, query_max_length: int | None = None
) -> dict:
    """BM25's and the dense model's runs of the judged queries and of the held-out weak pairs, written
    to `folder` (TREC runs, weak-pair qrels), so every fusion rule can be computed from them later."""
    data = load_beir(DATA / name)
    encoder = LlaraEncoder.from_pretrained(model, query_max_length=query_max_length)
    t = time.perf_counter()
    bm25 = evaluate_bm25(data, k).run
    dense, timings, encoded = exact_search(encoder, data.corpus, data.queries, k, long_documents=long_documents)
    weak = measure_on_weak_pairs(data.corpus, encoder, encoded.search, encoded.doc_ids, long_documents=long_documents)
    for file, run in (("bm25", bm25), ("dense", dense), ("weak-bm25", weak.bm25), ("weak-dense", weak.dense)):
        write_trec_run(folder / f"{file}.trec", run)
    (folder / "weak-qrels.json").write_text(json.dumps({"qrels": weak.qrels, "sources": weak.sources}))
    return {
        "seconds": time.perf_counter() - t,
        "encode_corpus_s": timings["encode_corpus_s"],
        "documents_read": encoded.documents,
    }


def saved_runs(folder: Path) -> tuple[Run, Run, WeakPairRuns]:
    """What `encode_runs` wrote: BM25's and the dense model's runs of the judged queries, and the weak pairs'."""
    saved = json.loads((folder / "weak-qrels.json").read_text())
    weak = WeakPairRuns(
        read_trec_run(folder / "weak-bm25.trec"),
        read_trec_run(folder / "weak-dense.trec"),
        saved["qrels"],
        saved["sources"],
    )
    return read_trec_run(folder / "bm25.trec"), read_trec_run(folder / "dense.trec"), weak


def collection(name: str, folder: Path, k: int = 1000) -> dict:
    """Every rule fused from the saved runs, each against BM25 on the judged queries."""
    data = load_beir(DATA / name)
    bm25, dense, weak_runs = saved_runs(folder)
    weak = weigh(weak_runs)

    def per_query(run, qrels=data.qrels) -> np.ndarray:
        scores = per_query_scores(run, qrels, (METRIC,))
        return np.array([scores[q][METRIC] for q in sorted(qrels)])

    def fused_on_weak(fusion: Fusion) -> np.ndarray:
        return per_query(fuse(weak_runs.bm25, weak_runs.dense, fusion, 100), weak_runs.qrels)

    # auto (`weigh`): score fusion at the weight best on the weak pairs; auto-gated: BM25 alone unless
    # that fusion beats BM25 on the weak pairs, significantly
    chosen = fused_on_weak(Fusion("score", weak.weight))
    p_weak, _ = permutation_pvalue(chosen, per_query(weak_runs.bm25, weak_runs.qrels))
    gated = weak.weight if chosen.mean() > weak.bm25 and p_weak < 0.05 else 0.0
    # weighted RRF: its weight picked on the same weak pairs (ties: the smaller weight)
    rrf_weak_grid = {w: fused_on_weak(Fusion("rrf", w)).mean() for w in WEIGHTS}
    rrf_w = min(WEIGHTS, key=lambda w: (-round(rrf_weak_grid[w], 12), w))
    grid = {w: per_query(fuse(bm25, dense, Fusion("score", w), k)) for w in WEIGHTS}
    oracle_w = min(WEIGHTS, key=lambda w: (-round(grid[w].mean(), 12), w))

    runs = {
        "bm25": per_query(bm25),
        "dense": per_query(dense),
        "rrf": per_query(fuse(bm25, dense, Fusion("rrf"), k)),
        "rrf-weak": per_query(fuse(bm25, dense, Fusion("rrf", rrf_w), k)),
        "auto": grid[weak.weight],
        "auto-gated": grid[gated],
        "oracle": grid[oracle_w],
    }
    base = runs["bm25"]
    rows = {}
    for rule, x in runs.items():
        p = permutation_pvalue(x, base)[0] if rule != "bm25" else None
        rows[rule] = {"mean": float(x.mean()), "vs_bm25": float(x.mean() / max(base.mean(), 1e-9)), "p": p}
    return {
        "collection": name,
        "queries": len(data.qrels),
        "documents": len(data.corpus),
        "rows": rows,
        "weights": {
            "rrf-weak": rrf_w,
            "auto": weak.weight,
            "auto-gated": gated,
            "oracle": oracle_w,
        },
        "weak_pairs": {
            **weak.to_dict(),
            "p_fused_vs_bm25": p_weak,
            "rrf_grid": {f"{w:g}": v for w, v in rrf_weak_grid.items()},
        },
        "score_grid": {f"{w:g}": float(v.mean()) for w, v in grid.items()},
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
    global DATA  # --data: every function reads the collections from there
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="smollm2", help="the model to evaluate, or the base model to train")
    ap.add_argument(
        "--pretrain-minutes", type=float, default=None, help="train per collection (with --finetune-minutes)"
    )
    ap.add_argument("--finetune-minutes", type=float, default=None)
    ap.add_argument("--collections", default=",".join(SUITE))
    ap.add_argument("--models", type=Path, default=None, help="reuse MODELS/<name>/finetuned (an earlier --out)")
    ap.add_argument(
        "--stage",
        choices=("finetuned", "pretrained"),
        default="finetuned",
        help="with --models: evaluate MODELS/<name>/<stage> (pretrained: the adapted model, zero-shot)",
    )
    ap.add_argument("--long-documents", choices=("split", "truncate"), default="split")
    ap.add_argument("--data", type=Path, default=DATA, help="the folder holding the collections (BEIR layout)")
    ap.add_argument(
        "--query-max-length", type=int, default=None, help="encode queries at this length (default: the model's)"
    )
    ap.add_argument(
        "--finetune-args", default="", help='more `llara finetune` flags, e.g. "--group-size 1" (default: none)'
    )
    args = ap.parse_args()
    DATA = args.data
    results = []
    for name in args.collections.split(","):
        folder = args.out / name
        done = folder / "encoded.json"
        if not done.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            model, minutes = args.model, {}
            if args.models is not None and args.pretrain_minutes is None:
                model = str(args.models / name / args.stage)
            elif args.pretrain_minutes is not None:
                if args.models is not None and (args.models / name / "pairs.jsonl").is_file():
                    shutil.copy(args.models / name / "pairs.jsonl", folder / "pairs.jsonl")  # the same pairs
                model, minutes = train(
                    name,
                    folder,
                    args.pretrain_minutes,
                    args.finetune_minutes,
                    args.model,
                    tuple(shlex.split(args.finetune_args)),
                )
            timing = encode_runs(name, model, folder, args.long_documents, query_max_length=args.query_max_length)
            done.write_text(json.dumps({"model": model, "training_minutes": minutes, **timing}))
        result = collection(name, folder) | json.loads(done.read_text())
        (folder / "result.json").write_text(json.dumps(result, indent=1))
        results.append(result)
        r = results[-1]
        print(name, {c: round(v["mean"], 3) for c, v in r["rows"].items()}, "weights", r["weights"], flush=True)
    trained = (
        f"pretrain {args.pretrain_minutes} + finetune {args.finetune_minutes} min"
        if args.pretrain_minutes is not None
        else f"{args.models} ({args.stage})"
        if args.models is not None
        else args.model
    )
    md = markdown(results, f"nDCG@10, {trained}; * p < 0.05 vs BM25 (paired randomization, 10,000 resamples)")
    (args.out / "suite.json").write_text(json.dumps(results, indent=1))
    (args.out / "suite.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
