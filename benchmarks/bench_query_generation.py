"""Synthetic queries from the built-in model, before any training (issue 23 item 1): are they usable?

For a seeded sample of documents of each development-suite collection, the queries `llara pairs
--query-source generated` would write (`llara.training.query_generation`), against the query `auto` makes
for the same document (title, else sentence, else span):

  usable       share of generated queries neither empty nor copied from the document (80% of their words
               one run of its words: `copied`)
  words        mean words of a usable generated query
  new words    share of a usable query's words that its document does not contain (doc2query's point)
  BM25 S@10    share of queries whose own document BM25 ranks in its top 10 of the whole collection:
               a query too vague to find its document teaches little, one that matches it word for word
               teaches string matching
  s/doc        generation seconds per document (a batch of 16, the model loaded once; the load not counted)

    python benchmarks/bench_query_generation.py --sample 64 --out OUT/query-generation.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from bench_fusion_suite import DATA, SUITE  # a sibling script: the suite and where it lives

from llara.data.beir import format_document, read_corpus
from llara.data.weak_pairs import make_pair, normalized
from llara.retrieval.bm25 import BM25
from llara.training.query_generation import copied, generate_queries


def found_in_top(bm25: BM25, queries: dict[str, str], k: int = 10) -> float:
    """Share of (document id -> query) whose own document BM25 ranks in its top k."""
    if not queries:
        return float("nan")
    ids = list(queries)
    run = bm25.search(ids, [queries[d] for d in ids], k=k)
    return float(np.mean([d in run.get(d, {}) for d in ids]))


def new_words(query: str, document: str) -> float:
    words, known = normalized(query).split(), set(normalized(document).split())
    return sum(w not in known for w in words) / max(len(words), 1)


def collection(name: str, sample: int, seed: int, generator: str) -> dict:
    corpus = read_corpus(DATA / name / "corpus.jsonl", keep_empty=False)
    ids = sorted(random.Random(seed).sample(sorted(corpus), min(sample, len(corpus))))
    documents = {d: format_document(corpus[d]) for d in corpus}
    t = time.perf_counter()
    generated = dict(zip(ids, generate_queries([documents[d] for d in ids], generator), strict=True))
    seconds = time.perf_counter() - t
    usable = {d: q for d, q in generated.items() if not copied(q, documents[d])}
    rng = random.Random(seed)
    auto = {d: pair[0] for d in ids if (pair := make_pair(corpus[d], "auto", rng)) is not None}
    bm25 = BM25(list(documents), list(documents.values()))
    return {
        "collection": name,
        "documents": len(ids),
        "usable": len(usable) / len(ids),
        "empty": sum(not q for q in generated.values()) / len(ids),
        "words": float(np.mean([len(q.split()) for q in usable.values()])) if usable else 0.0,
        "new_words": float(np.mean([new_words(q, documents[d]) for d, q in usable.items()])) if usable else 0.0,
        "bm25_s10_generated": found_in_top(bm25, usable),
        "bm25_s10_auto_same_documents": found_in_top(bm25, {d: auto[d] for d in usable if d in auto}),
        "seconds_per_document": seconds / len(ids),
        "examples": [{"query": generated[d], "document": documents[d][:160]} for d in ids[:4]],
    }


def main() -> None:
    global DATA  # --data: collection() reads from there
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--generator", default="smollm2")
    ap.add_argument("--collections", default=",".join(SUITE))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    DATA = args.data
    results = [collection(n, args.sample, args.seed, args.generator) for n in args.collections.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(
        "| collection | usable | empty | words | new words | BM25 S@10 generated | BM25 S@10 auto (same docs) | s/doc |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['collection']} | {r['usable']:.0%} | {r['empty']:.0%} | {r['words']:.1f} | {r['new_words']:.0%} | "
            f"{r['bm25_s10_generated']:.2f} | {r['bm25_s10_auto_same_documents']:.2f} | "
            f"{r['seconds_per_document']:.2f} |"
        )


if __name__ == "__main__":
    main()
