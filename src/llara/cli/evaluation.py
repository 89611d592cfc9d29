"""`llara evaluate`, `llara compare`, `llara ablate`, `llara demo`: how good is a retriever, and is it better."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from llara.cli.options import (
    ENCODE_BATCH_SIZE,
    BatchSize,
    Fusion,
    FusionWeight,
    MaxTokensPerBatch,
    Method,
    Metrics,
    Model,
    PassageLength,
    Precision,
    QueryLength,
    Recipe,
    Seed,
    TopK,
    TrustRemoteCode,
    console,
    settings,
)
from llara.comparison import DEFAULT_METRICS
from llara.experiments.ablation import AblationOptions

A = AblationOptions  # the defaults of `llara ablate`
METRICS = ",".join(DEFAULT_METRICS)


def evaluate(
    data: Annotated[Path, typer.Option(help="dataset folder in BEIR layout")],
    output: Annotated[Path, typer.Option(help="folder for run.trec and metrics.json")],
    model: Model = "smollm2",
    method: Annotated[Method, typer.Option(help="dense (the model), bm25, or hybrid (both fused)")] = Method.dense,
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv")] = "test",
    fusion: Fusion = None,
    fusion_weight: FusionWeight = None,
    tune_on: Annotated[
        str | None, typer.Option(help="--fusion score: pick the weight on qrels/<TUNE_ON>.tsv (e.g. dev), not --split")
    ] = None,
    recipe: Recipe = None,
    top_k: TopK = 1000,
    batch_size: BatchSize = ENCODE_BATCH_SIZE,
    max_tokens_per_batch: MaxTokensPerBatch = None,
    query_max_length: QueryLength = None,
    passage_max_length: PassageLength = None,
    precision: Precision = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Retrieve for every judged query of a BEIR dataset and score the run with ir-measures."""
    from llara.data.beir import load_beir
    from llara.data.io import bad_rows
    from llara.evaluation import evaluate_bm25, evaluate_dense, evaluate_hybrid, tuning_split, write_evaluation
    from llara.reporting import metrics_table
    from llara.retrieval.fusion import fusion_options

    fuse = fusion_options(method.value, fusion and fusion.value, fusion_weight, tune_on)
    dataset = load_beir(data, split)  # all validation happens before anything is written
    tune = tuning_split(dataset, fuse) if fuse else None
    info = {"method": method.value, "dataset": str(data), "split": split, **dataset.stats}
    if method is Method.bm25:
        result = evaluate_bm25(dataset, k=top_k)
        name = "bm25"
    else:
        from llara.inference.encoder import LlaraEncoder

        encoder = LlaraEncoder.from_pretrained(
            model,
            recipe=recipe,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            precision=precision,
            trust_remote_code=trust_remote_code,
        )
        if fuse:
            result = evaluate_hybrid(encoder, dataset, fuse, top_k, tune, batch_size, True, max_tokens_per_batch)
        else:
            result = evaluate_dense(
                encoder, dataset, k=top_k, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch
            )
        name = f"{model} ({encoder.recipe.name})" + (" + bm25" if fuse else "")
        if fuse:
            console.print(f"fusion: {fuse.describe()}", soft_wrap=True)
        info.update(model=str(model), **encoder.config(), precision=precision)
        info.update(texts=encoder.prompts.wrapped, truncated_texts=encoder.prompts.truncated)
        if encoder.prompts.truncated:
            console.print(
                f"truncated {encoder.prompts.truncated} of {encoder.prompts.wrapped} texts to fit "
                "--query-max-length/--passage-max-length"
            )
    info["skipped_rows"] = bad_rows().count
    info["warnings"] = bad_rows().warnings()
    write_evaluation(output, result, info, tag=f"llara-{method.value}")
    Console().print(metrics_table(f"{data.name} ({split})", {name: result.metrics}, list(result.metrics)))
    console.print(f"wrote {output / 'run.trec'}, {output / 'metrics.json'} and {output / 'per_query.json'}")


def compare(
    runs: Annotated[list[Path], typer.Argument(help="TREC run files (e.g. OUT/run.trec of `llara evaluate`)")],
    qrels: Annotated[Path, typer.Option(help="judgements: BEIR qrels TSV (query-id corpus-id score) or TREC qrels")],
    metrics: Metrics = METRICS,
    baseline: Annotated[Path | None, typer.Option(help="the run the others are compared with (default: first)")] = None,
    output: Annotated[Path | None, typer.Option(help="JSON file for the table, p-values and settings")] = None,
    permutations: Annotated[int, typer.Option(help="randomization test resamples (exact if 2^queries <= it)")] = 10_000,
    alpha: Annotated[float, typer.Option(help="significance level for the * marker (Holm-corrected)")] = 0.05,
    seed: Seed = 0,
) -> None:
    """Compare runs with a baseline: metrics, differences, paired randomization and t-tests (Holm-corrected)."""
    from llara.comparison import compare_runs, parse_metrics
    from llara.data.io import write_json
    from llara.reporting import comparison_table

    result = compare_runs(runs, qrels, parse_metrics(metrics), baseline, permutations, seed, alpha)
    if output is not None:
        write_json(output, result)
    Console().print(comparison_table(result))
    if output is not None:
        console.print(f"wrote {output}")


def ablate(
    data: Annotated[Path, typer.Option(help="dataset folder in BEIR layout; its corpus.jsonl is the adaptation text")],
    output: Annotated[Path, typer.Option(help="folder for models, runs, ablation.json and ablation.md (resumable)")],
    model: Model = A.model,
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv: evaluated only, never trained on")] = A.split,
    train: Annotated[
        Path | None, typer.Option(help='JSONL rows {"query", "pos", "neg"} (default: weak pairs from the corpus)')
    ] = A.train,
    seeds: Annotated[int, typer.Option(help="fine-tuning seeds (each: raw and adapted model alike)")] = A.seeds,
    pretrain_minutes: Annotated[float, typer.Option(help="adaptation budget in minutes")] = A.pretrain_minutes,
    finetune_minutes: Annotated[
        float, typer.Option(help="budget of each fine-tuning run in minutes")
    ] = A.finetune_minutes,
    pretrain_steps: Annotated[int | None, typer.Option(help="adaptation steps instead of minutes")] = A.pretrain_steps,
    finetune_steps: Annotated[int | None, typer.Option(help="fine-tuning steps instead of minutes")] = A.finetune_steps,
    metrics: Metrics = METRICS,
) -> None:
    """Does EBAE + EBAR adaptation before fine-tuning beat fine-tuning directly? All arms on your data, with tests."""
    params = dict(locals())
    from llara.experiments.ablation import run_ablation

    run_ablation(data, output, settings(AblationOptions, params, metrics=metrics.split(",")), console)


def demo(
    output: Annotated[Path, typer.Option(help="folder for data, models and results")] = Path("llara-demo"),
    quick: Annotated[bool, typer.Option(help="a smaller, faster run")] = False,
    model: Model = "smollm2",
) -> None:
    """The whole pipeline on data that ships with pip packages (arXiv titles -> abstracts)."""
    from llara.experiments.demo import run_demo

    run_demo(output, quick=quick, model=model)
