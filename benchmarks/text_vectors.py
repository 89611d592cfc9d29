"""Real-text vectors for benchmarks/bench_ann.py: smollm2's contextual token states over real text.

A million real passages cannot be encoded on a 2-core machine, and the real text at hand (CISI and
the arXiv abstracts shipped in `cherche`) is only ~1,800 documents. Its ~280,000 tokens, though,
each get a contextual last-layer state from the model llara ships, in one forward pass per
document. Those states, L2-normalised, are the proxy: real text, the real model's 576-dimensional
geometry (anisotropic, clustered by token and topic, nothing like isotropic noise), at an N where
approximate search matters. Documents: CISI (title + text) and the arXiv abstracts, in a seeded
random order, cut at `--max-length` tokens, until `--max-tokens` states; queries: `--queries`
states drawn from the token states of texts that are not documents (CISI's queries and the arXiv
titles). The first position of every text is dropped (its state is the same attention sink in every
text, a heap of exact duplicates).

What it is not: a token state is not a passage embedding (llara pools the last states of a prompt),
its nearest neighbours are mostly the same word in similar contexts, and N stops at the text there
is. It tells whether an index setting chosen on the synthetic set holds on real-model geometry.

    nice -n 19 python benchmarks/text_vectors.py --output OUT/textvec --max-tokens 100000
    nice -n 19 python benchmarks/bench_ann.py --vectors OUT/textvec/base.npy --query-vectors OUT/textvec/queries.npy
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from llara.data.arxiv import arxiv_papers
from llara.data.beir import format_document, read_corpus, read_queries
from llara.modeling.embedder import last_hidden_state
from llara.modeling.loading import load_model
from llara.modeling.precision import autocast_dtype

ROOT = Path(__file__).resolve().parents[1]


def token_states(
    model, tokenizer, texts: list[str], max_length: int, budget: int, batch_size: int, deadline: float = math.inf
) -> np.ndarray:
    """L2-normalised last-layer states of every token but the first, text by text, until `budget` rows
    (or the `deadline`, a time.perf_counter() value)."""
    amp = autocast_dtype("auto", torch.device("cpu"))
    out, total, t0 = [], 0, time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            hidden = last_hidden_state(model, dict(batch)).float()
        mask = batch["attention_mask"].bool()
        mask[:, 0] = False  # right padding: position 0 is each text's first token
        rows = hidden[mask].numpy()
        out.append(rows / np.linalg.norm(rows, axis=1, keepdims=True))
        total += len(rows)
        print(
            f"  {start + len(batch['input_ids'])} texts, {total} states, {time.perf_counter() - t0:.0f} s", flush=True
        )
        if total >= budget or time.perf_counter() > deadline:
            break
    return np.concatenate(out)[:budget].astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--cisi", type=Path, default=ROOT.parent / "shared" / "data" / "cisi")
    parser.add_argument("--max-tokens", type=int, default=100_000, help="document states to keep (N)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per document at most")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-minutes", type=float, default=math.inf, help="stop encoding documents then")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    docs = [format_document(d) for d in read_corpus(args.cisi / "corpus.jsonl").values()]
    papers = arxiv_papers()
    docs += [p["abstract"] for p in papers]
    random.Random(0).shuffle(docs)
    questions = list(read_queries(args.cisi / "queries.jsonl").values()) + [p["title"] for p in papers]

    model, tokenizer = load_model("smollm2")
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    t0 = time.perf_counter()
    # the shuffled documents up to the budget, then sorted by length (fewer pads per batch)
    chosen, tokens = [], 0
    for doc in docs:
        if tokens >= args.max_tokens:
            break
        chosen.append(doc)
        tokens += min(len(tokenizer(doc)["input_ids"]), args.max_length) - 1
    chosen.sort(key=len)
    deadline = t0 + 60 * args.max_minutes
    base = token_states(model, tokenizer, chosen, args.max_length, args.max_tokens, args.batch_size, deadline)
    random.Random(1).shuffle(questions)  # query states from a random subset of the query texts, 2x what is drawn
    q_all = token_states(model, tokenizer, questions, args.max_length, 2 * args.queries, args.batch_size)
    rng = np.random.default_rng(0)
    queries = q_all[np.sort(rng.choice(len(q_all), size=min(args.queries, len(q_all)), replace=False))]
    seconds = time.perf_counter() - t0

    args.output.mkdir(parents=True, exist_ok=True)
    np.save(args.output / "base.npy", base)
    np.save(args.output / "queries.npy", queries)
    sims = base[rng.choice(len(base), 2000)] @ base[rng.choice(len(base), 2000)].T
    info = {
        "what": "smollm2 last-layer token states (first position dropped), L2-normalised",
        "documents": f"{len(chosen)} of the CISI documents (title + text) and cherche arXiv abstracts (seed 0)",
        "queries": "token states of CISI queries and arXiv titles (a random subset of the texts), sampled (seed 0)",
        "n": int(len(base)),
        "dim": int(base.shape[1]),
        "queries_n": int(len(queries)),
        "query_states_available": int(len(q_all)),
        "max_length": args.max_length,
        "mean_cosine_random_pairs": round(float(sims.mean()), 4),
        "encode_seconds": round(seconds, 1),
    }
    (args.output / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
