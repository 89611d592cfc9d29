"""The settings of `llara serve`: one dataclass, its fields the command's options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llara import settings
from llara.settings import ENCODE_BATCH_SIZE, FusionMethod, Precision, option


@dataclass(frozen=True)
class ServeOptions:
    """Everything `llara serve` takes."""

    model: str = settings.model()
    index: Path | None = option(None, "folder written by `llara index`, for POST /search")
    corpus: Path | None = option(None, "corpus.jsonl, for titles and bm25/hybrid search (default: the index's)")
    # hybrid search: auto (the weight chosen on weak pairs at start), rrf or score
    fusion: FusionMethod = settings.fusion(FusionMethod.auto)
    host: str = option("127.0.0.1", "address to bind; a non-loopback one needs --api-key")
    port: int = option(8000, "TCP port (0: any free one, printed at start)")
    api_key: str | None = option(None, "require 'Authorization: Bearer KEY' on every request", envvar="LLARA_API_KEY")
    served_model_name: str | None = option(None, "the name clients send as 'model' (default: --model as given)")
    recipe: str | None = settings.recipe()
    query_max_length: int | None = option(
        None, f"query tokens, prompt included (default: the index's, the model's, or {settings.QUERY_MAX_LENGTH})"
    )
    passage_max_length: int | None = option(
        None, f"passage tokens, prompt included (default: the index's, the model's, or {settings.PASSAGE_MAX_LENGTH})"
    )
    precision: Precision = settings.precision()
    batch_size: int = option(
        ENCODE_BATCH_SIZE,
        "texts per forward pass when encoding, gathered from concurrent requests",
        deprecated=("--max-batch",),
    )
    batch_wait_ms: float = option(5.0, "how long a request finding the model idle waits for company")
    rejoin_wait_ms: float = option(
        250.0, "after a batch for several clients, the longest wait for their next texts (and 1/4 of its time)"
    )
    max_queue: int = option(256, "requests waiting or running at most; past it: 503")
    max_inputs: int = option(512, "texts per embeddings request at most")
    max_body_bytes: int = option(4 << 20, "request body size limit (413 past it)")
    max_top_k: int = option(1000, "largest top_k a search may ask")
    ef_search: int | None = settings.ef_search()
    nprobe: int | None = settings.nprobe()
    access_log: bool = option(False, "log every request")
    trust_remote_code: bool = settings.trust_remote_code()
