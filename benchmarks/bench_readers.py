"""What line-precise validation costs: read_corpus vs a bare json.loads loop over the same file.

    python benchmarks/bench_readers.py [--rows 200000]

Prints rows/s of both and their ratio (validated / bare), strict mode and --skip-bad-rows mode.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from llara.data.beir import read_corpus
from llara.data.io import skip_bad_rows


def make_corpus(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = "dense retrieval passage query embedding vector library information science système 検索".split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
            f.write(json.dumps({"_id": f"d{i}", "title": f"title {i}", "text": text}, ensure_ascii=False) + "\n")


def bare(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return {str(r["_id"]): r for r in map(json.loads, f)}


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        make_corpus(path, args.rows)
        mb = path.stat().st_size / 1e6
        t_bare = best_of(lambda: bare(path))
        t_strict = best_of(lambda: read_corpus(path))

        def skipping():
            with skip_bad_rows():
                read_corpus(path)

        t_skip = best_of(skipping)
    print(f"{args.rows} rows, {mb:.0f} MB")
    print(f"bare json.loads loop : {args.rows / t_bare:10.0f} rows/s")
    print(f"read_corpus (strict) : {args.rows / t_strict:10.0f} rows/s  time ratio vs bare {t_strict / t_bare:.2f}")
    print(f"read_corpus (skip)   : {args.rows / t_skip:10.0f} rows/s  time ratio vs bare {t_skip / t_bare:.2f}")


if __name__ == "__main__":
    main()
