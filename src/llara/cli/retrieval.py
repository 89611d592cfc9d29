"""`llara encode`, `llara index`, `llara search`: a corpus to embeddings, embeddings to an index, queries to a run."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from llara.cli.options import (
    ENCODE_BATCH_SIZE,
    BatchSize,
    EfSearch,
    Fusion,
    FusionWeight,
    MaxTokensPerBatch,
    Method,
    Model,
    Nprobe,
    PassageLength,
    Precision,
    Recipe,
    TopK,
    TrustRemoteCode,
    console,
    settings,
)
from llara.errors import LlaraError
from llara.retrieval.options import BUILD_TYPES, IndexParams

IndexType = StrEnum("IndexType", {t: t for t in BUILD_TYPES})
P = IndexParams  # `llara index`'s defaults: one home


def encode(
    corpus: Annotated[Path, typer.Option(help="corpus.jsonl (BEIR: _id, title, text)")],
    output: Annotated[Path, typer.Option(help="folder for the .npy chunks, ids and manifests")],
    model: Model = "smollm2",
    recipe: Recipe = None,
    shard: Annotated[
        str | None, typer.Option(help="i/n: encode the i-th of n slices (default: torchrun's rank)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="finish an interrupted run, re-encoding only missing chunks")] = False,
    dtype: Annotated[str, typer.Option(help="float32 | float16 (storage of the embeddings)")] = "float32",
    batch_size: BatchSize = ENCODE_BATCH_SIZE,
    max_tokens_per_batch: MaxTokensPerBatch = None,
    chunk_size: Annotated[int, typer.Option(help="documents per .npy file (and per resume step)")] = 1024,
    passage_max_length: PassageLength = None,
    precision: Precision = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Encode a corpus to memory-mappable .npy chunks (streaming, resumable, shardable)."""
    from llara.inference.corpus import encode_corpus_file, parse_shard, scan_corpus
    from llara.inference.encoder import LlaraEncoder
    from llara.modeling.loading import device_of_rank

    i, n = parse_shard(shard)
    scan_corpus(corpus)  # validate before loading a model
    encoder = LlaraEncoder.from_pretrained(
        model,
        recipe=recipe,
        passage_max_length=passage_max_length,
        precision=precision,
        trust_remote_code=trust_remote_code,
        device=device_of_rank(),  # under torchrun each process takes the GPU of its local rank
    )
    m = encode_corpus_file(encoder, corpus, output, (i, n), resume, dtype, batch_size, max_tokens_per_batch, chunk_size)
    console.print(f"shard {i}/{n}: rows {m['rows'][0]}..{m['rows'][1]} in {output} ({m['encoded_now']} encoded now)")


def index(
    embeddings: Annotated[Path, typer.Option(help="folder written by `llara encode` (all shards)")],
    output: Annotated[Path, typer.Option(help="index folder to write")],
    type: Annotated[
        IndexType,
        typer.Option(
            "--type",
            help="auto (flat up to --flat-max vectors, hnswsq above), flat (exact), hnsw, hnswsq (HNSW over "
            "8-bit codes, re-ranked exactly), ivf or ivfpq",
        ),
    ] = IndexType.auto,
    flat_max: Annotated[int, typer.Option(help="--type auto: exact up to this many vectors")] = P.flat_max,
    hnsw_m: Annotated[int, typer.Option(help="HNSW graph degree")] = P.hnsw_m,
    ef_construction: Annotated[int, typer.Option(help="HNSW build beam")] = P.ef_construction,
    ef_search: Annotated[
        int | None, typer.Option(help="HNSW search beam (stored; default by collection size)")
    ] = P.ef_search,
    refine_factor: Annotated[
        int, typer.Option(help="hnswsq: candidates per result re-ranked on the float vectors")
    ] = P.refine_factor,
    nlist: Annotated[int | None, typer.Option(help="IVF cells (default ~4 sqrt(N))")] = P.nlist,
    pq_m: Annotated[int | None, typer.Option(help="PQ sub-vectors (must divide dim)")] = P.pq_m,
    pq_bits: Annotated[int | None, typer.Option(help="bits per PQ code (default 8)")] = P.pq_bits,
    nprobe: Annotated[
        int | None, typer.Option(help="IVF cells searched (stored; default ivf nlist/8, ivfpq 32)")
    ] = P.nprobe,
) -> None:
    """Build a FAISS inner-product index (exact, HNSW, IVF or IVF-PQ; by default by size) from encoded shards."""
    params = settings(IndexParams, dict(locals()))  # the parameters named as IndexParams' fields
    from llara.retrieval.index import build_index

    meta = build_index(embeddings, output, type.value, params)
    console.print(f"wrote {output}: {meta['index_type']} index of {meta['count']} x {meta['dim']}")


def search(
    queries: Annotated[Path, typer.Option(help="queries.jsonl (_id, text)")],
    output: Annotated[Path, typer.Option(help="TREC run file to write")],
    index: Annotated[Path | None, typer.Option(help="folder written by `llara index` (dense, hybrid)")] = None,
    model: Model = "smollm2",
    method: Annotated[Method, typer.Option(help="dense (the index), bm25 (--corpus), hybrid (both)")] = Method.dense,
    corpus: Annotated[Path | None, typer.Option(help="corpus.jsonl for BM25 (--method bm25 or hybrid)")] = None,
    fusion: Fusion = None,
    fusion_weight: FusionWeight = None,
    top_k: TopK = 1000,
    batch_size: BatchSize = ENCODE_BATCH_SIZE,
    max_tokens_per_batch: MaxTokensPerBatch = None,
    ef_search: EfSearch = None,
    nprobe: Nprobe = None,
    precision: Precision = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Encode queries with the index's recipe, search, and write a TREC run (BM25 and hybrid: --corpus)."""
    from llara.data.beir import read_corpus, read_queries
    from llara.retrieval.bm25 import BM25
    from llara.retrieval.fusion import fusion_options, hybrid_search
    from llara.retrieval.index import DenseIndex, dense_run
    from llara.retrieval.runs import write_trec_run

    fuse = fusion_options(method.value, fusion and fusion.value, fusion_weight)
    if (method is Method.dense) != (corpus is None) or (method is Method.bm25) != (index is None):
        raise LlaraError("--method dense takes --index, bm25 takes --corpus, hybrid takes both")
    dense = DenseIndex(index) if index else None  # refuses an index whose files do not match its metadata
    docs = read_corpus(corpus) if corpus else None
    found = read_queries(queries)  # validate before loading a model
    if dense is None:
        run = BM25.run(docs, found, top_k)
    else:
        from llara.inference.encoder import LlaraEncoder

        dense.configure(ef_search=ef_search, nprobe=nprobe)
        encoder = LlaraEncoder.from_pretrained(
            model,
            recipe=dense.meta["recipe"],
            query_max_length=dense.meta["query_max_length"],
            precision=precision,
            trust_remote_code=trust_remote_code,
        )
        if fuse and fuse.method == "auto":
            from llara.calibration import choose_fusion, measure_on_weak_pairs

            dense.check_encoder(encoder)
            weak = measure_on_weak_pairs(
                docs, encoder, dense.search, dense.ids, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch
            )
            fuse = choose_fusion(weak)
            console.print(f"fusion: {fuse.describe()}", soft_wrap=True)
        if fuse:
            run = hybrid_search(found, docs, dense, encoder, fuse, top_k, batch_size, max_tokens_per_batch)
        else:
            run = dense_run(dense, encoder, found, top_k, batch_size, max_tokens_per_batch)
    tag = dense.meta["index_type"] if method is Method.dense else method.value
    write_trec_run(output, run, tag=f"llara-{tag}")
    said = fuse and fuse.method != "auto"  # auto said its line above
    console.print(f"wrote {output}: top {top_k} for {len(found)} queries" + (f", {fuse.describe()}" if said else ""))
