"""FAISS indexes on disk: exact inner product, HNSW (over floats or 8-bit codes), IVF or IVF-PQ, with the
metadata to refuse misuse.

An index folder holds ``index.faiss``, ``ids.txt`` (row -> document id) and ``meta.json`` (model
fingerprint, recipe, dimension, count, type, parameters, and the size and hash of the other two
files). It is built under a temporary name and renamed into place. Opening checks the files against
the metadata; searching checks the query encoder against it. `--type auto` (the default) builds an
exact index up to `IndexParams.flat_max` vectors and `hnswsq` above (retrieval/options.py says why).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from llara.data.io import atomic_dir, check_finite, write_json
from llara.errors import LlaraError
from llara.inference.corpus import open_embeddings
from llara.retrieval.dense import owners
from llara.retrieval.options import BUILD_TYPES, INDEX_TYPES, IndexParams
from llara.retrieval.runs import Run

log = logging.getLogger(__name__)

__all__ = ["INDEX_TYPES", "DenseIndex", "IndexParams", "build_index", "dense_run", "search_to_run_file"]
FAISS_CLASS = {
    "flat": "IndexFlatIP",
    "hnsw": "IndexHNSWFlat",
    "hnswsq": "IndexRefineFlat",  # over an IndexHNSWSQ
    "ivf": "IndexIVFFlat",
    "ivfpq": "IndexIVFPQ",
}
INDEX_FILE, IDS_FILE, META_FILE = "index.faiss", "ids.txt", "meta.json"
FORMAT = 1


def _make(index_type: str, dim: int, p: IndexParams) -> faiss.Index:
    if index_type == "flat":
        return faiss.IndexFlatIP(dim)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p.ef_construction
        index.hnsw.efSearch = p.ef_search
        return index
    if index_type == "hnswsq":
        # the graph is built and walked over 8-bit codes (a quarter of the bytes per distance); the
        # refine_factor * k best are re-ranked on the float vectors, which the index keeps too
        base = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = p.ef_construction
        base.hnsw.efSearch = p.ef_search
        index = faiss.IndexRefineFlat(base)
        index.k_factor = p.refine_factor
        return index
    quantizer = faiss.IndexFlatIP(dim)
    if index_type == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, p.nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, p.nlist, p.pq_m, p.pq_bits, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = p.nprobe
    return index


def training_rows(index_type: str, count: int, p: IndexParams) -> int:
    """How many rows an index trains on (0: the type needs no training): `train_size`, or more where
    IVF cells (39 points each, as FAISS asks) or PQ codebooks need them; never above count. The 8-bit
    codes of hnswsq learn each dimension's range."""
    if index_type == "hnswsq":
        return min(count, p.train_size)
    if index_type not in ("ivf", "ivfpq"):
        return 0
    need = p.nlist * 39 if index_type == "ivf" else max(p.nlist * 39, (1 << p.pq_bits) * 39)
    return min(count, max(p.train_size, need))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_index(
    embeddings: str | Path, output: str | Path, index_type: str = "auto", params: IndexParams | None = None
) -> dict:
    """Index every shard of an embeddings folder; returns the metadata written beside the index.
    `auto` picks the type by the number of vectors (`IndexParams.choose_type`)."""
    if index_type not in BUILD_TYPES:
        raise LlaraError(f"unknown index type {index_type!r}; choose one of {', '.join(BUILD_TYPES)}")
    emb = open_embeddings(embeddings)
    output = Path(output)
    if output.exists() and not (output / META_FILE).is_file():
        raise LlaraError("exists and is not a llara index; choose another --output", output)
    requested = index_type
    params = params or IndexParams()
    if index_type == "auto":
        index_type = params.choose_type(emb.count)
        log.info("--type auto: %s for %d vectors (flat up to %d)", index_type, emb.count, params.flat_max)
    p = params.resolve(emb.count, emb.dim, index_type)
    index = _make(index_type, emb.dim, p)
    take = training_rows(index_type, emb.count, p)
    if take:
        rng = np.random.default_rng(0)
        sample = emb.rows(np.sort(rng.choice(emb.count, size=take, replace=False)))
        check_finite(sample, "document embeddings")
        log.info("training %s on %d rows", index_type, take)
        index.train(sample)
        del sample
    for arr in emb.arrays():  # chunk by chunk: the embeddings never all sit in RAM as float32
        part = np.ascontiguousarray(arr, dtype=np.float32)
        check_finite(part, "document embeddings")
        index.add(part)

    with atomic_dir(output) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        (tmp / IDS_FILE).write_text("".join(d + "\n" for d in emb.ids()), encoding="utf-8")
        meta = {
            "format": FORMAT,
            "index_type": index_type,
            "requested_type": requested,
            "count": int(index.ntotal),
            "dim": emb.dim,
            **{k: emb.info[k] for k in ("model", "recipe", "query_max_length", "passage_max_length", "precision")},
            "documents": emb.documents,  # fewer than count where long documents were split into passages
            "long_documents": emb.info.get("long_documents") or "truncate",  # older folders lack the key: truncated
            "embeddings": str(Path(embeddings)),
            "embeddings_dtype": emb.info["dtype"],
            "params": asdict(p),
            "files": {name: {"bytes": (tmp / name).stat().st_size} for name in (INDEX_FILE, IDS_FILE)},
        }
        meta["files"][IDS_FILE]["sha256"] = _sha256(tmp / IDS_FILE)
        write_json(tmp / META_FILE, meta)
    return meta


class DenseIndex:
    """An opened index folder. `check_encoder` refuses a query encoder it was not built with."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = folder = Path(folder)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise LlaraError("not a llara index (no meta.json); build one with `llara index`", folder)
        try:
            self.meta = meta = json.loads(meta_path.read_text())
            files, count, dim, kind = meta["files"], meta["count"], meta["dim"], meta["index_type"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LlaraError(f"unreadable index metadata ({e})", meta_path) from None
        for name, want in files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != want["bytes"]:
                raise LlaraError("missing, or its size does not match meta.json (rebuild the index)", path)
        if _sha256(folder / IDS_FILE) != files[IDS_FILE]["sha256"]:
            raise LlaraError("does not match meta.json (rebuild the index)", folder / IDS_FILE)
        self.index = faiss.read_index(str(folder / INDEX_FILE))
        got = type(faiss.downcast_index(self.index)).__name__
        if (self.index.ntotal, self.index.d, got) != (count, dim, FAISS_CLASS.get(kind)):
            raise LlaraError(
                f"index holds {self.index.ntotal} x {self.index.d} ({got}), meta.json says {count} x {dim} ({kind})",
                folder / INDEX_FILE,
            )
        self.ids = (folder / IDS_FILE).read_text(encoding="utf-8").splitlines()  # per row: passages share an id
        if len(self.ids) != count:
            raise LlaraError(f"{len(self.ids)} ids for {count} vectors", folder / IDS_FILE)
        self.owner = owners(self.ids)  # row -> document, where documents were split: search returns documents

    def configure(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Search-time knobs (`--ef-search` for HNSW, `--nprobe` for IVF); None keeps the index's own."""
        if ef_search is not None and self.meta["index_type"] == "hnsw":
            faiss.downcast_index(self.index).hnsw.efSearch = ef_search
        if ef_search is not None and self.meta["index_type"] == "hnswsq":
            faiss.downcast_index(faiss.downcast_index(self.index).base_index).hnsw.efSearch = ef_search
        if nprobe is not None and self.meta["index_type"] in ("ivf", "ivfpq"):
            faiss.extract_index_ivf(self.index).nprobe = nprobe

    def check_encoder(self, encoder) -> None:
        """Queries must come from the model, recipe and dimension the documents were encoded with."""
        theirs = {"model": encoder.fingerprint(), "recipe": encoder.recipe.record(), "dim": encoder.dim}
        for key, value in theirs.items():
            if value != self.meta[key]:
                raise LlaraError(
                    f"the index was built with {key} {self.meta[key]!r}, the queries come with {value!r}; "
                    "encode queries with the index's model and recipe",
                    self.folder / META_FILE,
                    field=key,
                )

    def search(self, queries: np.ndarray, k: int, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """The top k documents for each query: (scores, rows), a split document by its best passage."""
        from llara.retrieval.dense import search

        if queries.ndim != 2 or queries.shape[1] != self.meta["dim"]:
            raise LlaraError(f"queries of shape {queries.shape} for an index of dimension {self.meta['dim']}")
        return search(self.index, queries, k, batch_size=batch_size, owner=self.owner)


def search_to_run_file(
    index: DenseIndex,
    encoder,
    queries: str | Path,
    output: str | Path,
    top_k: int = 1000,
    batch_size: int = 32,
    max_tokens_per_batch: int | None = None,
) -> int:
    """Encode a queries.jsonl file (EBAR / query prompt), search, write a TREC run; returns #queries."""
    from llara.data.beir import read_queries
    from llara.retrieval.runs import write_trec_run

    found = read_queries(queries)
    run = dense_run(index, encoder, found, top_k, batch_size, max_tokens_per_batch)
    write_trec_run(output, run, tag=f"llara-{index.meta['index_type']}")
    return len(found)


def dense_run(
    index: DenseIndex,
    encoder,
    queries: dict[str, str],
    top_k: int = 1000,
    batch_size: int = 32,
    max_tokens_per_batch: int | None = None,
) -> Run:
    """Encode queries (id -> text) with the index's model and recipe and search: the top k per query."""
    from llara.retrieval.dense import to_run

    index.check_encoder(encoder)
    emb = encoder.encode_queries(
        list(queries.values()), batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch
    )
    scores, rows = index.search(emb, top_k)
    return to_run(list(queries), index.ids, scores, rows)
