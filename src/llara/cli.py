"""The `llara` command: thin typer wrappers over the library. Bad input exits 2 with one line."""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llara.errors import LlaraError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="LLaRA dense retrieval: adapt, fine-tune, encode, search and evaluate decoder-only LLMs.",
)
console = Console(stderr=True)
_state = {"debug": False}

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="built-in name (smollm2), a .gguf file or a HF folder")]
RecipeOpt = Annotated[
    str | None, typer.Option(help="reference | paper | repllama | mean (default: the model's own, else reference)")
]


class Method(StrEnum):
    dense = "dense"
    bm25 = "bm25"


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and results")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("faiss", "faiss.loader", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not debug:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def metrics_table(title: str, rows: dict[str, dict[str, float]], columns: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("method")
    for c in columns:
        table.add_column(c, justify="right")
    for name, values in rows.items():
        table.add_row(
            name, *(f"{values[c]:.3f}" if isinstance(values.get(c), float) else str(values.get(c, "")) for c in columns)
        )
    return table


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="dataset folder in BEIR layout")],
    output: Annotated[Path, typer.Option(help="folder for run.trec and metrics.json")],
    model: ModelOpt = "smollm2",
    method: Annotated[Method, typer.Option(help="dense (the model) or bm25")] = Method.dense,
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv")] = "test",
    recipe: RecipeOpt = None,
    top_k: Annotated[int, typer.Option(help="documents retrieved per query")] = 1000,
    batch_size: int = 32,
    query_max_length: int = 64,
    passage_max_length: int = 256,
    precision: Annotated[
        str, typer.Option(help="auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)")
    ] = "auto",
    trust_remote_code: bool = False,
) -> None:
    """Retrieve for every judged query of a BEIR dataset and score the run with ir-measures."""
    from llara.data.beir import load_beir
    from llara.data.io import write_json
    from llara.evaluation import evaluate_bm25, evaluate_dense
    from llara.retrieval.runs import write_trec_run

    dataset = load_beir(data, split)  # all validation happens before anything is written
    info = {"method": method.value, "dataset": str(data), "split": split, **dataset.stats}
    if method is Method.bm25:
        result = evaluate_bm25(dataset, k=top_k)
        name = "bm25"
    else:
        from llara.encoder import LlaraEncoder

        encoder = LlaraEncoder.from_pretrained(
            model,
            recipe=recipe,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            precision=precision,
            trust_remote_code=trust_remote_code,
        )
        result = evaluate_dense(encoder, dataset, k=top_k, batch_size=batch_size)
        name = f"{model} ({encoder.recipe.name})"
        info.update(model=str(model), **encoder.config(), precision=precision)
    write_trec_run(output / "run.trec", result.run, tag=f"llara-{method.value}")
    write_json(output / "metrics.json", {**result.metrics, "info": {**info, **result.timings}})
    Console().print(metrics_table(f"{data.name} ({split})", {name: result.metrics}, list(result.metrics)))
    console.print(f"wrote {output / 'run.trec'} and {output / 'metrics.json'}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="folder for data, models and results")] = Path("llara-demo"),
    quick: Annotated[bool, typer.Option(help="a smaller, faster run")] = False,
    model: ModelOpt = "smollm2",
) -> None:
    """The whole pipeline on data that ships with pip packages (arXiv titles -> abstracts)."""
    from llara.demo import run_demo

    run_demo(output, quick=quick, model=model)


# --- further commands (pretrain, finetune, mine, pairs, encode, index, search, explain, export) go below,
# each a thin wrapper over its module; keep this file free of logic.


def main() -> None:
    try:
        app()
    except LlaraError as e:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
