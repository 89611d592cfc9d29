"""What a server serves: the model, and optionally an index, its corpus (titles) and BM25 over it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llara.errors import LlaraError
from llara.serving.batching import Encoded, encode_texts

if TYPE_CHECKING:
    from llara.retrieval.fusion import Fusion
    from llara.serving.options import ServeOptions

log = logging.getLogger(__name__)

METHODS = ("dense", "bm25", "hybrid")
HYBRID_DEPTH = 100  # each list fused for hybrid search is at least this deep


def fuse_ranked(
    bm25: Sequence[tuple[str, float]], dense: Sequence[tuple[str, float]], fusion: Fusion
) -> list[tuple[str, float]]:
    """Two ranked (id, score) lists fused as `fusion` says, best first, ties by id: the same function
    as `llara evaluate --method hybrid` (llara.retrieval.fusion)."""
    from llara.retrieval.fusion import fuse, ranked

    fused = fuse({"q": dict(bm25)}, {"q": dict(dense)}, fusion, k=len(bm25) + len(dense)).get("q", {})
    return [(d, fused[d]) for d in ranked(fused)]


class Service:
    """The loaded model, and optionally an index, a corpus (titles) and BM25 over it."""

    def __init__(self, opts: ServeOptions) -> None:
        from llara.inference.encoder import LlaraEncoder

        self.opts = opts
        self.name = opts.served_model_name or str(opts.model)
        self.created = int(time.time())
        self.index = None
        lengths = {"query_max_length": opts.query_max_length, "passage_max_length": opts.passage_max_length}
        recipe = opts.recipe
        if opts.index is not None:
            from llara.retrieval.index import DenseIndex

            self.index = DenseIndex(opts.index)  # refuses an index whose files do not match its metadata
            self.index.configure(ef_search=opts.ef_search, nprobe=opts.nprobe)
            recipe = recipe or self.index.meta["recipe"]
            for key in lengths:  # queries and passages are cut as they were for the index
                lengths[key] = lengths[key] or self.index.meta.get(key)
        self.encoder = LlaraEncoder.from_pretrained(
            opts.model,
            recipe=recipe,
            precision=opts.precision,
            trust_remote_code=opts.trust_remote_code,
            **{k: v for k, v in lengths.items() if v},
        )
        for side in ("passage", "query"):  # fail now, not per request, if a prompt leaves no room
            self.encoder.prompts.wrap([], side, self.encoder.max_length[side])
        if self.index is not None:
            self.index.check_encoder(self.encoder)  # the model, recipe and dim the documents were encoded with

        self.titles: dict[str, str] | None = None
        self.bm25 = None
        self.fusion: Fusion | None = None  # hybrid search's, set once both sides are loaded
        corpus = opts.corpus or (recorded_corpus(self.index.meta) if self.index is not None else None)
        if corpus is not None:
            self._load_corpus(Path(corpus), explicit=opts.corpus is not None)

    def _load_corpus(self, path: Path, explicit: bool) -> None:
        from llara.data.beir import format_document, read_corpus
        from llara.retrieval.bm25 import BM25

        if not explicit and not path.is_file():
            log.warning("the index's corpus %s is not there: bm25 and hybrid search need --corpus", path)
            return
        docs = read_corpus(path)
        if self.index is not None and set(docs) != set(self.index.ids):
            raise LlaraError(
                f"holds {len(docs)} documents, the index {len(self.index.ids)}, not the same ids; "
                "pass the corpus the index was built from",
                path,
            )
        self.titles = {d: doc.get("title") or "" for d, doc in docs.items()}
        ids = list(docs)
        log.info("indexing %d documents for BM25", len(ids))
        self.bm25 = BM25(ids, [format_document(docs[d]) for d in ids])  # as `llara evaluate --method bm25`
        if self.index is not None:
            self.fusion = self._choose_fusion(docs)

    def _choose_fusion(self, docs: dict[str, dict[str, str]]) -> Fusion:
        """Hybrid search's fusion, decided once at start: `--fusion auto` takes the choice the model's llara.json
        records for this corpus, else measures on held-out weak pairs."""
        from llara.retrieval.fusion import Fusion

        if self.opts.fusion != "auto":
            return Fusion(self.opts.fusion)
        from llara.calibration import fusion_for_index

        fusion = fusion_for_index(docs, self.encoder, self.index, self.opts.model)
        log.info("hybrid search: %s", fusion.describe())
        return fusion

    def encode(self, texts: list[str], side: str) -> Encoded:
        return encode_texts(self.encoder, texts, side, self.opts.batch_size)

    def info(self) -> dict:
        out = {"model": self.name, "dim": self.encoder.dim, **self.encoder.config()}
        out["precision"] = str(self.encoder.amp_dtype or "float32").removeprefix("torch.")
        if self.index is not None:
            out["index"] = {
                k: self.index.meta.get(k) for k in ("index_type", "count", "dim", "documents", "long_documents")
            }
        if self.fusion is not None:
            out["fusion"] = self.fusion.to_dict()
        out["methods"] = [m for m in METHODS if self.can(m)]
        return out

    def can(self, method: str) -> bool:
        return {"dense": self.index is not None, "bm25": self.bm25 is not None}.get(
            method, self.index is not None and self.bm25 is not None
        )

    # search helpers run in a worker thread: FAISS and BM25 would otherwise block the event loop
    def dense_hits(self, embedding: np.ndarray, k: int) -> list[tuple[str, float]]:
        scores, rows = self.index.search(embedding[None, :], k)
        return [(self.index.ids[j], float(s)) for s, j in zip(scores[0], rows[0], strict=True) if j >= 0]

    def bm25_hits(self, query: str, k: int) -> list[tuple[str, float]]:
        run = self.bm25.search(["q"], [query], k=k)["q"]
        return sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))


def recorded_corpus(meta: dict) -> Path | None:
    """The corpus an index was built from: meta.json's "corpus" if it has one, else the corpus named
    in the manifests of the embeddings folder it was built from."""
    if meta.get("corpus"):
        return Path(meta["corpus"])
    folder = Path(meta.get("embeddings") or "")
    for manifest in sorted(folder.glob("manifest-*.json")) if meta.get("embeddings") and folder.is_dir() else []:
        try:
            return Path(json.loads(manifest.read_text())["corpus"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None
