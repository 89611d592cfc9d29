"""Peak memory of `llara encode` as the corpus grows: streaming chunks keep it flat.

Runs `python -m llara encode` as a subprocess on synthetic corpora of two sizes (default 2,000 and
8,000 documents of ~150 words) and reads each run's own peak RSS (ru_maxrss from os.wait4). The
model is a small random LLaMA with smollm2's real tokenizer, so the test measures llara's memory,
not the model's. A pipeline that held the corpus or all embeddings would grow with the corpus.

    python benchmarks/bench_encode_memory.py
    python benchmarks/bench_encode_memory.py --sizes 20000,200000 --words 60 --index
                                                                      # the issue-7 stress run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from llara.modeling.loading import resolve_model
from llara.testing import make_tiny_model


def small_model(folder: Path) -> Path:
    return make_tiny_model(folder, tokenizer=AutoTokenizer.from_pretrained(resolve_model("smollm2")))


def corpus(path: Path, n: int, words_per_doc: int = 150) -> Path:
    rng = np.random.default_rng(n)
    vocab = [f"w{i}" for i in range(5000)]
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(vocab[j] for j in rng.integers(0, len(vocab), words_per_doc))
            f.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": text}) + "\n")
    return path


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one `llara` child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llara", "--quiet", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"llara {args[0]} failed with exit code {proc.returncode}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0  # Linux reports KiB


def index_and_search(model: Path, tmp: Path, n: int, corpus_path: Path) -> None:
    """`llara index` (exact) over the encoded shards, then `llara search` for 100 queries."""
    emb, idx, run = tmp / f"emb-{n}", tmp / f"index-{n}", tmp / f"run-{n}.trec"
    rss, secs = peak_rss_mb(["index", "--embeddings", str(emb), "--output", str(idx)])
    size = sum(f.stat().st_size for f in idx.iterdir())
    print(f"  index: {size / 2**20:.1f} MiB on disk, peak RSS {rss:.0f} MiB, {secs:.0f} s")
    queries = tmp / f"queries-{n}.jsonl"
    with open(corpus_path) as src, open(queries, "w") as dst:
        for i, line in zip(range(100), src, strict=False):
            dst.write(json.dumps({"_id": f"q{i}", "text": json.loads(line)["text"][:200]}) + "\n")
    args = ["search", "--index", str(idx), "--queries", str(queries), "--output", str(run), "--model", str(model)]
    rss, secs = peak_rss_mb([*args, "--top-k", "100", "--precision", "fp32"])
    rows = sum(1 for _ in open(run))
    print(f"  search: 100 queries -> {rows} run rows, peak RSS {rss:.0f} MiB, {secs:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,8000")
    parser.add_argument("--index", action="store_true", help="also build a flat index and search 100 queries")
    parser.add_argument("--words", type=int, default=150, help="words per document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = small_model(tmp / "model")
        results = {}
        for n in (int(s) for s in args.sizes.split(",")):
            path = corpus(tmp / f"corpus-{n}.jsonl", n, args.words)
            cmd = ["encode", "--model", str(model), "--corpus", str(path), "--output", str(tmp / f"emb-{n}")]
            results[n] = peak_rss_mb([*cmd, "--precision", "fp32"])
            size = sum(f.stat().st_size for f in (tmp / f"emb-{n}").iterdir())
            mb = path.stat().st_size / 2**20
            print(f"{n} docs ({mb:.1f} MiB of text, {size / 2**20:.1f} MiB of embeddings written): "
                  f"peak RSS {results[n][0]:.0f} MiB, {results[n][1]:.0f} s")  # fmt: skip
            if args.index:
                index_and_search(model, tmp, n, path)
    small, large = min(results), max(results)
    print(f"\ncorpus x{large / small:.0f} -> peak RSS x{results[large][0] / results[small][0]:.3f}")


if __name__ == "__main__":
    main()
