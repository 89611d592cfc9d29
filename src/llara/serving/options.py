"""The settings of `llara serve`: one dataclass, its defaults the CLI's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServeOptions:
    """Everything `llara serve` takes; the defaults are the CLI's."""

    model: str = "smollm2"
    index: Path | None = None
    corpus: Path | None = None
    fusion: str = "auto"  # hybrid search: auto (weight chosen on weak pairs at start), rrf or score
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    served_model_name: str | None = None  # the name clients send as "model"; default: --model as given
    recipe: str | None = None
    query_max_length: int | None = None
    passage_max_length: int | None = None
    precision: str = "auto"
    max_batch: int = 32  # texts per forward pass
    batch_wait_ms: float = 5.0  # how long a request that finds the model idle waits for company
    rejoin_wait_ms: float = 250.0  # the longest wait, after a batch for several clients, for their next texts
    max_queue: int = 256  # requests admitted and not yet answered; past it: 503
    max_inputs: int = 512  # texts per embeddings request
    max_body_bytes: int = 4 << 20
    max_top_k: int = 1000
    ef_search: int | None = None
    nprobe: int | None = None
    access_log: bool = False
    trust_remote_code: bool = False
