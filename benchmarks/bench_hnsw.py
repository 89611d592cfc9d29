"""HNSW vs exact inner-product search on a synthetic 1M x 576 float32 collection (smollm2's width).

The collection is clustered with a low intrinsic dimension, closer to real embeddings than iid
Gaussian noise (where every neighbour is almost equally far and no index can do better than a scan):
each vector is a cluster centre (1,000 centres) + a point of a shared 32-dimensional subspace +
small isotropic noise, L2-normalised. Queries are drawn the same way. Recall@10 is measured against
the exact top 10 of an IndexFlatIP; speed is queries per second on the same machine and threads.

    python benchmarks/bench_hnsw.py
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from llara.retrieval.index import IndexParams, _make


def clustered(n: int, dim: int, seed: int, centers: np.ndarray, basis: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks, to keep the float64 temporaries small
        m = min(100_000, n - start)
        x = centers[rng.integers(0, len(centers), m)]
        x += rng.standard_normal((m, basis.shape[0]), dtype=np.float32) @ basis
        x += 0.05 * rng.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def synthetic(n: int, dim: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """The collection and its queries (fixed seeds; benchmarks/bench_ann.py draws the same)."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((1000, dim), dtype=np.float32) / np.sqrt(dim)
    basis = rng.standard_normal((32, dim), dtype=np.float32) / np.sqrt(dim) * 0.5
    return clustered(n, dim, 1, centers, basis), clustered(queries, dim, 2, centers, basis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--m", type=int, default=IndexParams.hnsw_m)
    parser.add_argument("--ef-construction", type=int, default=IndexParams.ef_construction)
    parser.add_argument("--ef-search", default="16,32,64,128,256")
    args = parser.parse_args()

    t0 = time.perf_counter()
    xb, xq = synthetic(args.n, args.dim, args.queries)
    print(
        f"collection {args.n} x {args.dim} float32, {args.queries} queries, faiss threads {faiss.omp_get_max_threads()}"
    )
    print(f"generated in {time.perf_counter() - t0:.0f} s")

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(xb)
    t0 = time.perf_counter()
    _, exact = flat.search(xq, 10)
    exact_qps = args.queries / (time.perf_counter() - t0)
    print(f"exact (IndexFlatIP): {exact_qps:.1f} queries/s")
    del flat

    params = IndexParams(hnsw_m=args.m, ef_construction=args.ef_construction).resolve(args.n, args.dim, "hnsw")
    hnsw = _make("hnsw", args.dim, params)  # the very index `llara index --type hnsw` builds
    t0 = time.perf_counter()
    hnsw.add(xb)
    print(f"HNSW M={args.m} efConstruction={args.ef_construction}: built in {time.perf_counter() - t0:.0f} s")

    print("\n| efSearch | recall@10 | queries/s | speed-up vs exact |\n|---:|---:|---:|---:|")
    best = None
    for ef in (int(e) for e in args.ef_search.split(",")):
        hnsw.hnsw.efSearch = ef
        t0 = time.perf_counter()
        _, found = hnsw.search(xq, 10)
        qps = args.queries / (time.perf_counter() - t0)
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))
        print(f"| {ef} | {recall:.4f} | {qps:.1f} | {qps / exact_qps:.1f}x |")
        if recall >= 0.99 and best is None:
            best = (ef, recall, qps / exact_qps)
    if best:
        print(f"\nsmallest efSearch with recall@10 >= 0.99: {best[0]} (recall {best[1]:.4f}, {best[2]:.1f}x exact)")
    else:
        print("\nno efSearch tried reached recall@10 0.99")


if __name__ == "__main__":
    main()
