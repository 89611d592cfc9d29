"""`llara explain`, `llara export`, `llara serve`: look inside a model, hand it to other tools, serve it."""

from __future__ import annotations

import typer
from rich.console import Console

from llara.cli.options import command, console
from llara.errors import LlaraError
from llara.inference.options import ExplainOptions
from llara.integrations.export import ExportOptions
from llara.serving import ServeOptions


def _explain(o: ExplainOptions) -> None:
    """Decode an embedding into its top vocabulary tokens through the model's own LM head.

    What EBAE/EBAR taught the embedding to say. With --query and --document: both side by side, the
    tokens they share and their cosine similarity."""
    import json

    from llara.inference.encoder import LlaraEncoder
    from llara.inference.explain import compare, explain
    from llara.reporting import explanation_comparison_table, explanation_table

    text, query, document = o.text, o.query, o.document
    if (text is None) == (query is None or document is None) or (text is not None and (query or document)):
        raise LlaraError("give either TEXT, or both --query and --document")
    if o.top_tokens < 1:
        raise LlaraError(f"--top-tokens must be at least 1, got {o.top_tokens}")
    encoder = LlaraEncoder.from_pretrained(o.model, recipe=o.recipe, trust_remote_code=o.trust_remote_code)
    if text is not None:
        result = explain(encoder, text, o.side.value, o.top_tokens)
        table = explanation_table(result)
    else:
        result = compare(encoder, query, document, o.top_tokens)
        table = explanation_comparison_table(result)
    if o.json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        Console().print(table)


def _export(o: ExportOptions) -> None:
    """Export a model (LoRA adapters merged, tokenizer with the special tokens, llara.json) for other tools."""
    from llara.integrations.export import export as run_export

    out = run_export(
        o.model, o.output, o.format.value, recipe=o.recipe, overwrite=o.overwrite, trust_remote_code=o.trust_remote_code
    )
    console.print(f"wrote {out} ({o.format.value})")


def _serve(o: ServeOptions) -> None:
    """Serve embeddings (OpenAI-compatible POST /v1/embeddings) and search (POST /search) over HTTP."""
    from llara.serving import run_server

    run_server(o)


explain = command(ExplainOptions, _explain, "explain")
export = command(ExportOptions, _export, "export")
serve = command(ServeOptions, _serve, "serve")
