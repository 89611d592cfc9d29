"""Approximate search vs exact: several index kinds in one run, against the same exact baseline.

Methods (`--methods`, comma-separated; the exact IndexFlatIP baseline always runs):

- `hnsw`: FAISS IndexHNSWFlat as `llara index --type hnsw` builds it, at each `--hnsw M:efConstruction`,
  swept over `--ef-search` and the beam llara stores by default for N (marked "default");
- `hnswsq8`: FAISS HNSW over 8-bit scalar-quantised codes (IndexHNSWSQ, a quarter of the bytes per
  distance) at each `--hnsw` build, with an exact re-rank of the `k_factor * 10` best
  (IndexRefineFlat keeps the float vectors too), swept over `--k-factor` x `--ef-search`: the index
  `llara index --type hnswsq` builds, and `--type auto` above `flat_max` vectors (same sweep);
- `ivf`: FAISS IndexIVFFlat as `llara index --type ivf` builds it (same training sample), at each
  `--nlist` (`auto`: llara's default for N), swept over `--nprobe`;
- `ivfsq8`: IVF over 8-bit codes and the exact re-rank, swept over `--k-factor` x `--nprobe`;
- `ivfpqfs`: IVF over 4-bit fast-scan PQ codes (dim/2 sub-vectors, SIMD in registers) and the exact
  re-rank, swept over `--k-factor` x `--nprobe`;
- `usearch`: usearch's HNSW (inner product; `--usearch-dtype` storage) at each `--usearch
  M:efConstruction`, swept over `--ef-search` (`pip install usearch`, 2.26.6 measured; hnswlib ships
  no wheel here).

Data: the synthetic clustered collection of benchmarks/bench_hnsw.py (same generator and seeds, so
its figures compare; the first N rows of a larger run are the N-row collection when N is a multiple
of 100,000), or `--vectors base.npy --query-vectors queries.npy` (benchmarks/text_vectors.py writes
real-text ones). Recall@10 is against the exact top 10 of an IndexFlatIP. Queries/s: all queries in
one call, best of `--repeats`, on `--threads` threads for every library; the speed-up is given in
wall time and in process CPU time (the steadier figure on a machine shared with other jobs).
`dist/q` counts the full or coded vectors compared per query (FAISS's and usearch's own counters),
a measure of work that no other job on the machine changes. Memory: the serialized index and the
process RSS growth over the build. `--cache DIR` keeps built indexes (and their build figures) so a
second run only searches.

The defaults are the run for 1M x 576 on 2 cores: llara's auto index above 200k (hnswsq, M 32,
efConstruction 128) and IVF-Flat, ~15 minutes (estimated from 100k and 200k runs: the hnswsq build
~9 min, IVF ~4 min, data and exact ~1.5 min); `--methods hnswsq8,ivf,usearch` adds usearch at the
same M and efConstruction (f16, ~15 min more), `hnsw` HNSW over floats (~12 min more).

    nice -n 19 python benchmarks/bench_ann.py --json OUT/ann-1m.json                    # 1M, ~15 min
    nice -n 19 python benchmarks/bench_ann.py --n 200000 --methods hnsw,hnswsq8,usearch --threads 1
    nice -n 19 python benchmarks/bench_ann.py --vectors v/base.npy --query-vectors v/queries.npy --n 30000
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from bench_hnsw import synthetic

from llara.retrieval.index import IndexParams, _make, training_rows
from llara.retrieval.options import hnsw_ef_search

TARGET = 0.99


def ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def pairs(text: str) -> list[tuple[int, int]]:
    """ "32:40,48:100" -> [(32, 40), (48, 100)]."""
    return [tuple(int(v) for v in t.split(":")) for t in text.split(",") if t.strip()]


def rss() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)]))


def timed(search: Callable[[], object], repeats: int) -> tuple[object, float, float]:
    """(result of the last call, best wall seconds, best process CPU seconds) of `repeats` calls."""
    wall, cpu, out = math.inf, math.inf, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = search()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return out, wall, cpu


@dataclass
class Build:
    """One index to build, and the settings to search it at (each list a sweep that may stop early)."""

    method: str
    label: str
    make: Callable[[], object]
    sweeps: list[list[tuple[str, Callable[[object], None]]]] = field(default_factory=list)
    library: str = "faiss"


def faiss_search(index: faiss.Index, xq: np.ndarray) -> tuple[np.ndarray, float]:
    """(ids, vectors compared per query)."""
    faiss.cvar.hnsw_stats.reset()
    faiss.cvar.indexIVF_stats.reset()
    ids = index.search(xq, 10)[1]
    return ids, (faiss.cvar.hnsw_stats.ndis + faiss.cvar.indexIVF_stats.ndis) / len(xq)


class Bench:
    def __init__(self, xb: np.ndarray, xq: np.ndarray, tag: str, args) -> None:
        self.xb, self.xq, self.args = xb, xq, args
        self.tag = f"{tag}-{len(xb)}"
        self.rows: list[dict] = []
        flat = faiss.IndexFlatIP(xb.shape[1])
        flat.add(xb)
        (_, self.exact), secs, self.exact_cpu = timed(lambda: flat.search(xq, 10), max(3, args.repeats))
        self.exact_qps = len(xq) / secs
        print(
            f"exact (IndexFlatIP, {len(xq)} queries in one call): {self.exact_qps:.1f} queries/s, "
            f"{self.exact_cpu:.2f} CPU s",
            flush=True,
        )
        print(
            "\n| method | build | search | build s (CPU s) | index MiB | RSS +MiB | recall@10 | dist/q | queries/s "
            "| vs exact | vs exact, CPU time |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            flush=True,
        )

    def sample(self, take: int) -> np.ndarray:
        rng = np.random.default_rng(0)  # as build_index draws it
        return self.xb[np.sort(rng.choice(len(self.xb), size=take, replace=False))]

    # --- building (or loading from --cache), measuring, searching

    def _cached(self, b: Build) -> tuple[object, dict]:
        path = None
        if self.args.cache:
            slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{self.tag}-{b.method}-{b.label}").strip("-")
            path = self.args.cache / slug
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.with_suffix(".json").is_file():
                stats = json.loads(path.with_suffix(".json").read_text())
                if b.library == "usearch":
                    from usearch.index import Index

                    return Index.restore(str(path.with_suffix(".usearch"))), stats
                return faiss.read_index(str(path.with_suffix(".faiss"))), stats
        before = rss()
        t0, c0 = time.perf_counter(), time.process_time()
        index = b.make()
        stats = {"build_s": time.perf_counter() - t0, "build_cpu_s": time.process_time() - c0}
        after = rss()
        stats["rss_delta_bytes"] = after - before if before is not None and after is not None else None
        if b.library == "usearch":
            stats["index_bytes"] = int(index.serialized_length)
            if path:
                index.save(str(path.with_suffix(".usearch")))
        else:  # the size of the index file (written to disk, not copied in memory: 1M x 576 is GBs)
            with tempfile.TemporaryDirectory() as tmp:
                file = path.with_suffix(".faiss") if path else Path(tmp) / "index.faiss"
                faiss.write_index(index, str(file))
                stats["index_bytes"] = file.stat().st_size
        if path:
            path.with_suffix(".json").write_text(json.dumps(stats))
        return index, stats

    def _search(self, b: Build, index) -> tuple[np.ndarray, float]:
        if b.library == "usearch":
            found = index.search(self.xq, 10, threads=self.args.threads)
            return found.keys.astype(np.int64), found.computed_distances / len(self.xq)
        return faiss_search(index, self.xq)

    def run(self, b: Build) -> None:
        index, stats = self._cached(b)
        for sweep in b.sweeps:
            for label, configure in sweep:
                configure(index)
                (found, dist), secs, cpu = timed(lambda: self._search(b, index), self.args.repeats)
                qps = len(self.xq) / secs
                row = {
                    "method": b.method,
                    "build": b.label,
                    "search": label,
                    **{k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()},
                    "recall_at_10": recall_at_10(found, self.exact),
                    "dist_per_query": round(dist, 1),
                    "qps": round(qps, 1),
                    "speedup": round(qps / self.exact_qps, 2),
                    "speedup_cpu": round(self.exact_cpu / max(cpu, 1e-9), 2),
                }
                self.rows.append(row)
                mib = lambda v: f"{v / 2**20:.0f}" if v is not None else "-"  # noqa: E731
                print(
                    f"| {b.method} | {b.label} | {label} | {stats['build_s']:.0f} ({stats['build_cpu_s']:.0f}) | "
                    f"{mib(stats['index_bytes'])} | {mib(stats['rss_delta_bytes'])} | {row['recall_at_10']:.4f} | "
                    f"{dist:.0f} | {qps:.0f} | {row['speedup']:.1f}x | {row['speedup_cpu']:.1f}x |",
                    flush=True,
                )
                slower = max(row["speedup"], row["speedup_cpu"]) < self.args.stop_speedup
                if row["recall_at_10"] >= self.args.stop_recall or slower:
                    break

    # --- the methods: each yields the builds to run

    def _faiss(self, factory: str, train: int, before_add: Callable[[faiss.Index], None] | None = None):
        def make() -> faiss.Index:
            index = (
                factory()
                if callable(factory)
                else faiss.index_factory(self.xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
            )
            if before_add:
                before_add(index)
            if train:
                index.train(self.sample(train))
            index.add(self.xb)
            return index

        return make

    def _beams(self) -> list[int]:
        """--ef-search, and the beam `llara index` stores by default for this N, in order."""
        return sorted({*ints(self.args.ef_search), hnsw_ef_search(len(self.xb))})

    def _label(self, ef: int) -> str:
        return f"efSearch {ef}" + (" (default)" if ef == hnsw_ef_search(len(self.xb)) else "")

    def hnsw(self):
        n, dim = self.xb.shape
        for m, efc in pairs(self.args.hnsw):
            p = IndexParams(hnsw_m=m, ef_construction=efc).resolve(n, dim, "hnsw")
            yield Build(
                "faiss-hnsw",
                f"M {m}, efC {efc}",
                self._faiss(lambda p=p: _make("hnsw", dim, p), 0),  # the index `llara index --type hnsw` builds
                [[(self._label(ef), lambda i, ef=ef: setattr(i.hnsw, "efSearch", ef)) for ef in self._beams()]],
            )

    def hnswsq8(self):
        n, dim = self.xb.shape
        for m, efc in pairs(self.args.hnsw):
            p = IndexParams(hnsw_m=m, ef_construction=efc).resolve(n, dim, "hnswsq")

            def configure(index, ef, k):
                faiss.downcast_index(index.base_index).hnsw.efSearch, index.k_factor = ef, k

            sweeps = [
                [
                    (f"{self._label(ef)}, k_factor {k}", lambda i, ef=ef, k=k: configure(i, ef, k))
                    for ef in self._beams()
                ]
                for k in ints(self.args.k_factor)
            ]
            yield Build(
                "faiss-hnsw-sq8-refine",
                f"HNSW{m}_SQ8,RFlat, efC {efc}",
                # the index `llara index --type hnswsq` builds (and `auto` above flat_max)
                self._faiss(lambda p=p: _make("hnswsq", dim, p), training_rows("hnswsq", n, p)),
                sweeps,
            )

    def _nlists(self) -> list[IndexParams]:
        n, dim = self.xb.shape
        return [
            IndexParams(nlist=None if t.strip() == "auto" else int(t)).resolve(n, dim, "ivf")
            for t in self.args.nlist.split(",")
        ]

    def ivf(self):
        n, dim = self.xb.shape
        for p in self._nlists():
            train = training_rows("ivf", n, p)
            sweep = [
                (f"nprobe {q}", lambda i, q=q: setattr(i, "nprobe", q)) for q in ints(self.args.nprobe) if q <= p.nlist
            ]
            yield Build(
                "faiss-ivf",
                f"nlist {p.nlist}, train {train}",
                self._faiss(lambda p=p: _make("ivf", dim, p), train),
                [sweep],
            )

    def _refined(self, method: str, codes: str):
        n = len(self.xb)
        for p in self._nlists():
            train = training_rows("ivf", n, p)

            def configure(index, q, k):
                faiss.extract_index_ivf(index).nprobe, index.k_factor = q, k

            sweeps = [
                [
                    (f"nprobe {q}, k_factor {k}", lambda i, q=q, k=k: configure(i, q, k))
                    for q in ints(self.args.nprobe)
                    if q <= p.nlist
                ]
                for k in ints(self.args.k_factor)
            ]
            factory = f"IVF{p.nlist},{codes},RFlat"
            yield Build(method, f"{factory}, train {train}", self._faiss(factory, train), sweeps)

    def ivfsq8(self):
        yield from self._refined("faiss-ivf-sq8-refine", "SQ8")

    def ivfpqfs(self):
        dim = self.xb.shape[1]
        yield from self._refined("faiss-ivf-pq4fs-refine", f"PQ{dim // 2 if dim % 2 == 0 else dim}x4fs")

    def usearch(self):
        n, dim = self.xb.shape
        for (m, efc), dtype in ((b, d) for b in pairs(self.args.usearch) for d in self.args.usearch_dtype.split(",")):

            def make(m=m, efc=efc, dtype=dtype):
                from usearch.index import Index

                index = Index(ndim=dim, metric="ip", dtype=dtype, connectivity=m, expansion_add=efc)
                index.add(np.arange(n, dtype=np.uint64), self.xb, threads=self.args.threads)
                return index

            sweep = [
                (f"ef {ef}", lambda i, ef=ef: setattr(i, "expansion_search", ef)) for ef in ints(self.args.ef_search)
            ]
            yield Build("usearch-hnsw", f"M {m}, efC {efc}, {dtype}", make, [sweep], library="usearch")

    def summary(self) -> list[dict]:
        """Per build: the fastest setting (in CPU time) that reaches the target recall."""
        best: dict[tuple[str, str], dict] = {}
        for row in self.rows:
            key = (row["method"], row["build"])
            if row["recall_at_10"] >= TARGET and (key not in best or row["speedup_cpu"] > best[key]["speedup_cpu"]):
                best[key] = row
        print(f"\nfastest setting with recall@10 >= {TARGET}, per build:")
        for (method, build), row in sorted(best.items(), key=lambda kv: -kv[1]["speedup_cpu"]):
            print(
                f"  {method} [{build}] {row['search']}: recall {row['recall_at_10']:.4f}, {row['speedup']:.1f}x "
                f"exact ({row['speedup_cpu']:.1f}x in CPU time), built in {row['build_s']:.0f} s, "
                f"{row['index_bytes'] / 2**20:.0f} MiB"
            )
        for method, build in sorted({(r["method"], r["build"]) for r in self.rows} - set(best)):
            print(f"  {method} [{build}]: no setting tried reached {TARGET}")
        return list(best.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic rows, or the first N rows of --vectors")
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--vectors", type=Path, help="a (N, dim) float32 .npy of documents instead of synthetic")
    parser.add_argument("--query-vectors", type=Path, help="the (Q, dim) .npy of queries for --vectors")
    parser.add_argument("--methods", default="hnswsq8,ivf", help="comma-separated; see the module docstring")
    parser.add_argument("--hnsw", default="32:128", help="faiss HNSW builds (hnsw, hnswsq8), M:efConstruction,...")
    parser.add_argument("--usearch", default="32:128", help="usearch builds, M:efConstruction,...")
    parser.add_argument("--usearch-dtype", default="f16", help="usearch vector storage: f32, f16, i8 (comma-separated)")
    parser.add_argument("--ef-search", default="64,96,128,192,256,384,512")
    parser.add_argument("--nlist", default="auto", help="IVF cells, comma-separated; auto: llara's default for N")
    parser.add_argument("--nprobe", default="8,16,32,48,64,96,128,192,256,384,512")
    parser.add_argument("--k-factor", default="2", help="re-ranked candidates per result / 10 (refine methods)")
    parser.add_argument("--repeats", type=int, default=2, help="search timing: best of this many calls")
    parser.add_argument("--stop-recall", type=float, default=0.999, help="stop a sweep once recall@10 reaches it")
    parser.add_argument(
        "--stop-speedup", type=float, default=1.0, help="stop a sweep once slower than this x exact (0: never)"
    )
    parser.add_argument("--threads", type=int, default=faiss.omp_get_max_threads())
    parser.add_argument("--cache", type=Path, help="keep built indexes here and reuse them")
    parser.add_argument("--json", type=Path, help="write every row and the run's settings here")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.vectors:
        xb = np.ascontiguousarray(np.load(args.vectors, mmap_mode="r", allow_pickle=False)[: args.n], dtype=np.float32)
        xq = np.ascontiguousarray(np.load(args.query_vectors, allow_pickle=False)[: args.queries], dtype=np.float32)
        source, tag = f"{args.vectors} ({args.query_vectors})", args.vectors.parent.name + "-" + args.vectors.stem
    else:
        xb, xq = synthetic(args.n, args.dim, args.queries)
        source, tag = "synthetic clustered (bench_hnsw.py)", f"synthetic{args.dim}"
    print(
        f"{source}: {len(xb)} x {xb.shape[1]} float32, {len(xq)} queries, {args.threads} threads, "
        f"faiss {faiss.__version__}; ready in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    bench = Bench(xb, xq, tag, args)
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        for build in getattr(bench, method.strip())():
            bench.run(build)
        print(f"<!-- {method}: {time.perf_counter() - t0:.0f} s -->", flush=True)
    best = bench.summary()
    if args.json:
        try:
            import usearch

            usearch_version = usearch.__version__
        except ImportError:
            usearch_version = None
        record = {
            "source": source,
            "n": len(xb),
            "dim": int(xb.shape[1]),
            "queries": len(xq),
            "threads": args.threads,
            "faiss": faiss.__version__,
            "usearch": usearch_version,
            "machine": platform.processor() or platform.machine(),
            "exact_qps": round(bench.exact_qps, 1),
            "exact_cpu_s": round(bench.exact_cpu, 3),
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": bench.rows,
            "best": best,
        }
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
