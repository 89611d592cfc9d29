"""The settings of `llara encode` and `llara explain`: one dataclass each, its fields the command's options."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from llara import settings
from llara.modeling.recipes import SIDES
from llara.settings import LongDocuments, Precision, option

DTYPES = ("float32", "float16")  # how `llara encode` stores the embeddings
StorageDtype = StrEnum("StorageDtype", {d: d for d in DTYPES})
Side = StrEnum("Side", {s: s for s in SIDES})


@dataclass(frozen=True)
class EncodeOptions:
    """What `llara encode` takes."""

    corpus: Path | None = option(None, "corpus.jsonl (BEIR: _id, title, text)", required=True)
    output: Path | None = option(None, "folder for the .npy chunks, ids and manifests", required=True)
    model: str = settings.model()
    recipe: str | None = settings.recipe()
    shard: str | None = option(None, "i/n: encode the i-th of n slices (default: torchrun's rank)")
    resume: bool = option(False, "finish an interrupted run, re-encoding only missing chunks")
    dtype: StorageDtype = option(StorageDtype.float32, "storage of the embeddings")
    batch_size: int = settings.batch_size()
    max_tokens_per_batch: int | None = settings.max_tokens_per_batch()
    docs_per_file: int = option(1024, "documents per .npy file (and per resume step)", deprecated=("--chunk-size",))
    passage_max_length: int | None = settings.passage_max_length()
    long_documents: LongDocuments = settings.long_documents()
    precision: Precision = settings.precision()
    trust_remote_code: bool = settings.trust_remote_code()


@dataclass(frozen=True)
class ExplainOptions:
    """What `llara explain` takes."""

    text: str | None = option(None, "a text to decode (or give --query and --document)", argument=True)
    model: str = settings.model()
    query: str | None = option(None, "a query, shown beside --document")
    document: str | None = option(None, "a document, shown beside --query")
    side: Side = option(Side.passage, "prompt for TEXT: passage (EBAE) or query (EBAR)")
    top_tokens: int = option(20, "vocabulary tokens shown", deprecated=("--top-k",))
    recipe: str | None = settings.recipe()
    json: bool = option(False, "print JSON instead of a table")
    trust_remote_code: bool = settings.trust_remote_code()
