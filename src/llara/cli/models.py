"""`llara explain`, `llara export`, `llara serve`: look inside a model, hand it to other tools, serve it."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from llara.cli.options import (
    EfSearch,
    Fusion,
    FusionMethod,
    Model,
    Nprobe,
    Precision,
    Recipe,
    TrustRemoteCode,
    console,
)
from llara.errors import LlaraError
from llara.serving import ServeOptions

S = ServeOptions  # the defaults of `llara serve`
SERVE_FUSION = FusionMethod(S.fusion)


class Side(StrEnum):
    passage = "passage"
    query = "query"


class ExportFormat(StrEnum):
    hf = "hf"
    sentence_transformers = "sentence-transformers"


def explain(
    text: Annotated[str | None, typer.Argument(help="a text to decode (or give --query and --document)")] = None,
    model: Model = "smollm2",
    query: Annotated[str | None, typer.Option(help="a query, shown beside --document")] = None,
    document: Annotated[str | None, typer.Option(help="a document, shown beside --query")] = None,
    side: Annotated[Side, typer.Option(help="prompt for TEXT: passage (EBAE) or query (EBAR)")] = Side.passage,
    top_k: Annotated[int, typer.Option(help="tokens shown")] = 20,
    recipe: Recipe = None,
    json_: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Decode an embedding into its top-k vocabulary tokens through the model's own LM head.

    What EBAE/EBAR taught the embedding to say. With --query and --document: both side by side, the
    tokens they share and their cosine similarity."""
    import json

    from llara.inference.encoder import LlaraEncoder
    from llara.inference.explain import compare, explain
    from llara.reporting import explanation_comparison_table, explanation_table

    if (text is None) == (query is None or document is None) or (text is not None and (query or document)):
        raise LlaraError("give either TEXT, or both --query and --document")
    if top_k < 1:
        raise LlaraError(f"--top-k must be at least 1, got {top_k}")
    encoder = LlaraEncoder.from_pretrained(model, recipe=recipe, trust_remote_code=trust_remote_code)
    if text is not None:
        result = explain(encoder, text, side.value, top_k)
        table = explanation_table(result)
    else:
        result = compare(encoder, query, document, top_k)
        table = explanation_comparison_table(result)
    if json_:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        Console().print(table)


def export(
    output: Annotated[Path, typer.Option(help="folder to write (built under a temporary name, then renamed)")],
    model: Model = "smollm2",
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="hf (plain HF folder) or sentence-transformers")
    ] = ExportFormat.hf,
    recipe: Recipe = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing non-empty OUTPUT")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Export a model (LoRA adapters merged, tokenizer with the special tokens, llara.json) for other tools."""
    from llara.integrations.export import export as run_export

    out = run_export(model, output, fmt.value, recipe=recipe, overwrite=overwrite, trust_remote_code=trust_remote_code)
    console.print(f"wrote {out} ({fmt.value})")


def serve(
    model: Model = S.model,
    index: Annotated[Path | None, typer.Option(help="folder written by `llara index`, for POST /search")] = S.index,
    corpus: Annotated[
        Path | None, typer.Option(help="corpus.jsonl, for titles and bm25/hybrid search (default: the index's)")
    ] = S.corpus,
    fusion: Fusion = SERVE_FUSION,
    host: Annotated[str, typer.Option(help="address to bind; a non-loopback one needs --api-key")] = S.host,
    port: Annotated[int, typer.Option(help="TCP port (0: any free one, printed at start)")] = S.port,
    api_key: Annotated[
        str | None, typer.Option(envvar="LLARA_API_KEY", help="require 'Authorization: Bearer KEY' on every request")
    ] = S.api_key,
    served_model_name: Annotated[
        str | None, typer.Option(help="the name clients send as 'model' (default: --model as given)")
    ] = S.served_model_name,
    recipe: Recipe = S.recipe,
    query_max_length: Annotated[
        int | None, typer.Option(help="default: the index's, the model's, or 64")
    ] = S.query_max_length,
    passage_max_length: Annotated[
        int | None, typer.Option(help="default: the index's, the model's, or 256")
    ] = S.passage_max_length,
    precision: Precision = S.precision,
    max_batch: Annotated[
        int, typer.Option(help="texts per model batch, gathered from concurrent requests")
    ] = S.max_batch,
    batch_wait_ms: Annotated[
        float, typer.Option(help="how long a request finding the model idle waits for company")
    ] = S.batch_wait_ms,
    rejoin_wait_ms: Annotated[
        float,
        typer.Option(
            help="after a batch for several clients, the longest wait for their next texts (and 1/4 of its time)"
        ),
    ] = S.rejoin_wait_ms,
    max_queue: Annotated[int, typer.Option(help="requests waiting or running at most; past it: 503")] = S.max_queue,
    max_inputs: Annotated[int, typer.Option(help="texts per embeddings request at most")] = S.max_inputs,
    max_body_bytes: Annotated[int, typer.Option(help="request body size limit (413 past it)")] = S.max_body_bytes,
    max_top_k: Annotated[int, typer.Option(help="largest top_k a search may ask")] = S.max_top_k,
    ef_search: EfSearch = S.ef_search,
    nprobe: Nprobe = S.nprobe,
    access_log: Annotated[bool, typer.Option(help="log every request")] = S.access_log,
    trust_remote_code: TrustRemoteCode = S.trust_remote_code,
) -> None:
    """Serve embeddings (OpenAI-compatible POST /v1/embeddings) and search (POST /search) over HTTP."""
    options = dict(locals())  # the parameters are ServeOptions' fields, one to one
    from llara.serving import run_server

    run_server(ServeOptions(**options))
