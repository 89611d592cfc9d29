"""The settings of `llara index`: one dataclass, its defaults the CLI's (this module imports nothing heavy).

The defaults come from benchmarks/bench_ann.py, run on the synthetic clustered set of
bench_hnsw.py (30k to 200k x 576, and bench_hnsw.py's 1M run at efConstruction 40) and on smollm2's
token states of real text (30k x 576, benchmarks/text_vectors.py):

- up to `flat_max` (200,000) vectors an exact scan is cheap (a batch of queries: ~2.4 ms of CPU per
  query at 200k x 576) and no approximate index at recall@10 0.99 was more than ~2x faster on the
  synthetic set, for a build of minutes; `--type auto` builds `flat` there;
- above it, `hnswsq`: the HNSW graph over 8-bit codes, the best `refine_factor` x k re-ranked on the
  float vectors. Same recall as HNSW over floats at every beam tried (30k, 100k, 200k; synthetic and
  real text), 1.5x its queries per CPU second at 100k, 1.7-1.9x at 200k, 2x on the text at 30k,
  0.7x its build time, for ~1.2x the memory. IVF-Flat needed 10% of its cells for 0.90 on the
  synthetic set (0.99 at 7% on the text); usearch's HNSW (f32 or f16, same M and efConstruction)
  reached the same recall at the same beam, 1.7-2.5x slower to search and 1.2-2.2x slower to build
  on this CPU;
- M 32: M 16 and 48 needed about as many distance computations for 0.99 (100k); efConstruction
  128: the beam needed for 0.99 fell from ~160 to ~120 (100k) and ~200 to ~160 (200k) vs 40, for
  2.5-3x the build time;
- the beam for 0.99 grows about as sqrt(N) on the synthetic set (efConstruction 40: ~160 at 100k,
  ~200 at 200k, 512 at 1M), so `hnsw_ef_search` scales it from ~120 at 100k; the real-text states
  needed less than half the beam of the synthetic set at the same N (48 vs ~90 at 30k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path

from llara import settings
from llara.errors import LlaraError
from llara.settings import FusionMethod, Method, Precision, option

INDEX_TYPES = ("flat", "hnsw", "hnswsq", "ivf", "ivfpq")
BUILD_TYPES = ("auto", *INDEX_TYPES)  # what `llara index --type` takes; auto picks by collection size
IndexType = StrEnum("IndexType", {t: t for t in BUILD_TYPES})


@dataclass
class IndexParams:
    """Build and search knobs; None means "pick from the collection size" (see `resolve`)."""

    flat_max: int = option(200_000, "--type auto: exact (flat) up to this many vectors, hnswsq above")
    # graph degree: more = better recall, more memory and build time
    hnsw_m: int = option(32, "HNSW graph degree")
    # a better graph, so a narrower search reaches the same recall
    ef_construction: int = option(128, "HNSW build beam")
    ef_search: int | None = option(None, "HNSW search beam (stored; default by collection size)")
    refine_factor: int = option(2, "hnswsq: candidates per result re-ranked on the float vectors")
    nlist: int | None = option(None, "IVF cells (default ~4 sqrt(N))")
    # default the largest divisor of dim <= min(64, dim / 4)
    pq_m: int | None = option(None, "PQ sub-vectors (must divide dim)")
    pq_bits: int | None = option(None, "bits per PQ code (default 8, fewer for tiny collections)")
    nprobe: int | None = option(None, "IVF cells searched (stored; default ivf nlist/8, ivfpq 32)")
    train_size: int = 100_000  # training sample of IVF cells and codes, and of hnswsq's 8-bit ranges (rows)

    def params(self) -> IndexParams:
        """These parameters alone, as a new IndexParams (of an IndexOptions too)."""
        return IndexParams(**{f.name: getattr(self, f.name) for f in fields(IndexParams)})

    def choose_type(self, count: int) -> str:
        """The index type `--type auto` builds for `count` vectors."""
        return "flat" if count <= self.flat_max else "hnswsq"

    def resolve(self, count: int, dim: int, index_type: str | None = None) -> IndexParams:
        """Every None filled in for `count` x `dim` vectors in an index of `index_type` (default: auto's)."""
        index_type = index_type or self.choose_type(count)
        p = self.params()
        if p.nlist is None:
            # at least ~39 training points per cell, as FAISS asks, so k-means stays meaningful
            p.nlist = max(1, min(int(4 * math.sqrt(count)), count // 39))
        if p.pq_m is None:
            p.pq_m = max(m for m in range(1, min(64, max(1, dim // 4)) + 1) if dim % m == 0)
        if index_type == "ivfpq" and dim % p.pq_m:
            raise LlaraError(f"--pq-m {p.pq_m} must divide the dimension {dim}")
        if p.pq_bits is None:
            p.pq_bits = max(1, min(8, int(math.log2(max(2, count // 39)))))
        if p.ef_search is None:
            p.ef_search = hnsw_ef_search(count)
        if p.nprobe is None:
            p.nprobe = max(1, math.ceil(p.nlist / 8)) if index_type == "ivf" else 32
        p.nprobe = min(p.nprobe, p.nlist)
        return p


def hnsw_ef_search(count: int) -> int:
    """The default HNSW search beam: enough for recall@10 0.99 at M 32, efConstruction 128 on the
    synthetic set (~90 at 30k, ~120 at 100k, ~160 at 200k vectors), grown as sqrt(N) beyond:
    96 up to 30k, 128 at 100k, 192 at 200k, 416 at 1M (a multiple of 16; measured at 1M with
    hnswsq: recall@10 0.995 at 416, 0.994 at 384, 3x the exact scan, benchmarks/RESULTS.md)."""
    return max(96, 16 * math.ceil(8 * math.sqrt(count / 100_000)))


@dataclass
class IndexOptions(IndexParams):
    """What `llara index` takes: the embeddings, the index folder, its type, and IndexParams."""

    embeddings: Path | None = option(None, "folder written by `llara encode` (all shards)", required=True)
    output: Path | None = option(None, "index folder to write", required=True)
    type: IndexType = option(
        IndexType.auto,
        "auto (flat up to --flat-max vectors, hnswsq above), flat (exact), hnsw, hnswsq (HNSW over 8-bit codes, "
        "re-ranked exactly), ivf or ivfpq",
    )


@dataclass(frozen=True)
class SearchOptions:
    """What `llara search` takes."""

    queries: Path | None = option(None, "queries.jsonl (_id, text)", required=True)
    output: Path | None = option(None, "TREC run file to write", required=True)
    index: Path | None = option(None, "folder written by `llara index` (dense, hybrid)")
    model: str = settings.model()
    method: Method = option(Method.dense, "dense (the index), bm25 (--corpus), hybrid (both)")
    corpus: Path | None = option(None, "corpus.jsonl for BM25 (--method bm25 or hybrid)")
    fusion: FusionMethod | None = settings.fusion()
    fusion_weight: float | None = settings.fusion_weight()
    top_k: int = settings.top_k()
    batch_size: int = settings.batch_size()
    max_tokens_per_batch: int | None = settings.max_tokens_per_batch()
    ef_search: int | None = settings.ef_search()
    nprobe: int | None = settings.nprobe()
    precision: Precision = settings.precision()
    trust_remote_code: bool = settings.trust_remote_code()
