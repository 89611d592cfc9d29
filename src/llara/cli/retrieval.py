"""`llara encode`, `llara index`, `llara search`: a corpus to embeddings, embeddings to an index, queries to a run."""

from __future__ import annotations

from llara.cli.options import command, console
from llara.errors import LlaraError
from llara.inference.options import EncodeOptions
from llara.retrieval.options import IndexOptions, SearchOptions
from llara.settings import Method


def _encode(o: EncodeOptions) -> None:
    """Encode a corpus to memory-mappable .npy chunks (streaming, resumable, shardable)."""
    from llara.inference.corpus import encode_corpus_file, parse_shard, scan_corpus
    from llara.inference.encoder import LlaraEncoder
    from llara.modeling.loading import device_of_rank

    i, n = parse_shard(o.shard)
    scan_corpus(o.corpus)  # validate before loading a model
    encoder = LlaraEncoder.from_pretrained(
        o.model,
        recipe=o.recipe,
        passage_max_length=o.passage_max_length,
        precision=o.precision,
        trust_remote_code=o.trust_remote_code,
        device=device_of_rank(),  # under torchrun each process takes the GPU of its local rank
    )
    m = encode_corpus_file(
        encoder, o.corpus, o.output, (i, n), o.resume, o.dtype.value, o.batch_size, o.max_tokens_per_batch,
        o.docs_per_file, long_documents=o.long_documents.value,
    )  # fmt: skip
    console.print(
        f"shard {i}/{n}: documents {m['rows'][0]}..{m['rows'][1]} ({m['documents_read']['passages']} passages) in "
        f"{o.output} ({m['encoded_now']} encoded now)"
    )


def _index(o: IndexOptions) -> None:
    """Build a FAISS inner-product index (exact, HNSW, IVF or IVF-PQ; by default by size) from encoded shards."""
    from llara.retrieval.index import build_index

    meta = build_index(o.embeddings, o.output, o.type.value, o.params())
    docs = meta["documents"]
    console.print(
        f"wrote {o.output}: {meta['index_type']} index of {meta['count']} x {meta['dim']}"
        + (f" ({docs} documents)" if docs != meta["count"] else "")
    )


def _search(o: SearchOptions) -> None:
    """Encode queries with the index's recipe, search, and write a TREC run (BM25 and hybrid: --corpus)."""
    from llara.data.beir import read_corpus, read_queries
    from llara.retrieval.bm25 import BM25
    from llara.retrieval.fusion import fusion_options, hybrid_search
    from llara.retrieval.index import DenseIndex, dense_run
    from llara.retrieval.runs import write_trec_run

    method = o.method
    fuse = fusion_options(method.value, o.fusion and o.fusion.value, o.fusion_weight)
    if (method is Method.dense) != (o.corpus is None) or (method is Method.bm25) != (o.index is None):
        raise LlaraError("--method dense takes --index, bm25 takes --corpus, hybrid takes both")
    dense = DenseIndex(o.index) if o.index else None  # refuses an index whose files do not match its metadata
    docs = read_corpus(o.corpus) if o.corpus else None
    found = read_queries(o.queries)  # validate before loading a model
    if dense is None:
        run = BM25.run(docs, found, o.top_k)
    else:
        from llara.inference.encoder import LlaraEncoder

        dense.configure(ef_search=o.ef_search, nprobe=o.nprobe)
        encoder = LlaraEncoder.from_pretrained(
            o.model,
            recipe=dense.meta["recipe"],
            query_max_length=dense.meta["query_max_length"],
            passage_max_length=dense.meta["passage_max_length"],  # weak-pair passages are read as the index's
            precision=o.precision,
            trust_remote_code=o.trust_remote_code,
        )
        batching = {"batch_size": o.batch_size, "max_tokens_per_batch": o.max_tokens_per_batch}
        if fuse and fuse.method == "auto":
            from llara.calibration import fusion_for_index

            dense.check_encoder(encoder)
            fuse = fusion_for_index(docs, encoder, dense, o.model, **batching)
            console.print(f"fusion: {fuse.describe()}", soft_wrap=True)
        if fuse:
            run = hybrid_search(found, docs, dense, encoder, fuse, o.top_k, o.batch_size, o.max_tokens_per_batch)
        else:
            run = dense_run(dense, encoder, found, o.top_k, o.batch_size, o.max_tokens_per_batch)
    tag = dense.meta["index_type"] if method is Method.dense else method.value
    write_trec_run(o.output, run, tag=f"llara-{tag}")
    said = fuse and fuse.method != "auto"  # auto said its line above
    console.print(
        f"wrote {o.output}: top {o.top_k} for {len(found)} queries" + (f", {fuse.describe()}" if said else "")
    )


encode = command(EncodeOptions, _encode, "encode")
index = command(IndexOptions, _index, "index")
search = command(SearchOptions, _search, "search")
