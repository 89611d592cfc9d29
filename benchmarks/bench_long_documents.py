"""Long documents: truncation against splitting into passages (MaxP), quality and encode cost (issue 26 item 1).

Today a document longer than the passage length is cut (256 tokens by default). Compared here, with
one model per collection (the fine-tuned models `bench_fusion_suite.py` leaves in OUT/<name>/finetuned):

  trunc-256   the default: the document cut to 256 tokens (prompt included)
  trunc-512   a longer cut
  split-256   llara's `--long-documents split` (the default since 2026-12-05): the text split into
              windows that fit 256 tokens with the prompt and the title, a quarter of each window
              overlapping the next, every window encoded; a document scores the maximum of its
              passages (MaxP, Dai & Callan 2019); split-N: windows of N tokens
              (before 2026-12-05 this script split with its own copy of the rule: 4 tokens of slack
              instead of 2, the last window not moved to end at the text's end)

Each: nDCG@10 and R@100 of the dense model alone, the share of documents cut or split, the passages
encoded and the encoding seconds, all in the same run (compare ratios, not absolute times).

    python benchmarks/bench_long_documents.py --models OUT/fusion-3x3 --collections medline,time \
        [--settings trunc-256,trunc-512,split-256]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llara.comparison import permutation_pvalue
from llara.data.beir import format_document, load_beir
from llara.inference.encoder import LlaraEncoder
from llara.scoring import per_query_scores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("nDCG@10", "R@100")


def run(encoder, data, mode: str, length: int, k: int = 1000) -> tuple[dict, dict]:
    doc_ids = list(data.corpus)
    t = time.perf_counter()
    if mode == "trunc":
        texts, owner = [format_document(data.corpus[d]) for d in doc_ids], np.arange(len(doc_ids))
        emb = encoder.encode(texts, side="passage", max_length=length, show_progress_bar=False)
        long_docs = encoder.prompts.truncated_by_side["passage"]
    else:  # llara's own split (`--long-documents split`): PromptBuilder.passages
        emb, passages = encoder.encode_documents(
            [data.corpus[d] for d in doc_ids], max_length=length, show_progress_bar=False
        )
        texts, owner, long_docs = passages.texts, np.asarray(passages.owner), passages.long
    seconds = time.perf_counter() - t
    qids = list(data.queries)
    q = encoder.encode_queries([data.queries[x] for x in qids], show_progress_bar=False)
    scores = q @ emb.T  # exact, and MaxP: a document's score is its best passage's
    best = np.full((len(qids), len(doc_ids)), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, owner, scores.T)
    runs = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-best[i])[:k]
        runs[qid] = {doc_ids[j]: float(best[i, j]) for j in top}
    cost = {
        "passages": len(texts),
        "documents_long": long_docs,
        "share_long": long_docs / len(doc_ids),
        "encode_s": seconds,
    }
    return runs, cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, required=True, help="bench_fusion_suite.py's OUT (OUT/<name>/finetuned)")
    ap.add_argument("--collections", default="medline,time,cisi,lisa")
    ap.add_argument("--settings", default="trunc-256,trunc-512,split-256", help="MODE-LENGTH, the first the baseline")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    settings = [(m, int(n)) for m, n in (s.split("-") for s in args.settings.split(","))]
    results = {}
    for name in args.collections.split(","):
        data = load_beir(DATA / name)
        rows = {}
        base = None
        for mode, length in settings:
            encoder = LlaraEncoder.from_pretrained(args.models / name / "finetuned")  # fresh tallies per setting
            run_, cost = run(encoder, data, mode, length)
            per = per_query_scores(run_, data.qrels, METRICS)
            x = np.array([per[q]["nDCG@10"] for q in sorted(data.qrels)])
            base = x if base is None else base
            p = None if x is base else permutation_pvalue(x, base)[0]
            rows[f"{mode}-{length}"] = {
                **{m: float(np.mean([per[q][m] for q in per])) for m in METRICS},
                "p_vs_first": p,
                **cost,
            }
            print(
                name,
                f"{mode}-{length}",
                {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[f"{mode}-{length}"].items()},
                flush=True,
            )
        results[name] = rows
    lines = [
        "| collection | setting | nDCG@10 | R@100 | p vs the first | long docs | passages | encode s (x the first) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        t0 = next(iter(rows.values()))["encode_s"]
        for setting, r in rows.items():
            p = "" if r["p_vs_first"] is None else f"{r['p_vs_first']:.3f}"
            lines.append(
                f"| {name} | {setting} | {r['nDCG@10']:.3f} | {r['R@100']:.3f} | {p} | {r['share_long']:.0%} | "
                f"{r['passages']} | {r['encode_s']:.0f} ({r['encode_s'] / t0:.2f}x) |"
            )
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
