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
from llara.errors import LlaraError
from llara.experiments.ablation import AblationOptions

A = AblationOptions  # the defaults of `llara ablate`
METRICS = ",".join(DEFAULT_METRICS)


def evaluate(
    data: Annotated[
        list[Path],
        typer.Option(
            help="dataset folder in BEIR layout; repeat for a suite: each collection in turn, tested against BM25, "
            "and the macro average (OUTPUT/suite.json, suite.md)"
        ),
    ],
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
    """Retrieve for every judged query of a BEIR dataset (or of several) and score the runs with ir-measures."""
    from llara.retrieval.fusion import fusion_options

    fusion_options(method.value, fusion and fusion.value, fusion_weight, tune_on)  # refused before anything runs
    encoder = None

    def load_encoder():
        nonlocal encoder
        if encoder is None:  # once, for every collection
            from llara.inference.encoder import LlaraEncoder

            encoder = LlaraEncoder.from_pretrained(
                model,
                recipe=recipe,
                query_max_length=query_max_length,
                passage_max_length=passage_max_length,
                precision=precision,
                trust_remote_code=trust_remote_code,
            )
        return encoder

    def run(folder: Path, how: Method, out: Path) -> dict:
        """One collection, one method: OUT/run.trec, metrics.json, per_query.json; returns metrics and stats."""
        from llara.data.beir import load_beir
        from llara.data.io import bad_rows
        from llara.evaluation import evaluate_bm25, evaluate_dense, evaluate_hybrid, tuning_split, write_evaluation
        from llara.reporting import metrics_table

        fuse = fusion_options(how.value, fusion and fusion.value, fusion_weight, tune_on) if how is method else None
        dataset = load_beir(folder, split)  # all validation happens before anything is written
        tune = tuning_split(dataset, fuse) if fuse else None
        info = {"method": how.value, "dataset": str(folder), "split": split, **dataset.stats}
        if how is Method.bm25:
            result = evaluate_bm25(dataset, k=top_k)
            name = "bm25"
        else:
            enc = load_encoder()
            texts, cut = enc.prompts.wrapped, enc.prompts.truncated  # the encoder counts over its lifetime
            docs, docs_cut = enc.prompts.wrapped_by_side["passage"], enc.prompts.truncated_by_side["passage"]
            if fuse:
                result = evaluate_hybrid(enc, dataset, fuse, top_k, tune, batch_size, True, max_tokens_per_batch)
            else:
                result = evaluate_dense(
                    enc, dataset, k=top_k, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch
                )
            name = f"{model} ({enc.recipe.name})" + (" + bm25" if fuse else "")
            if fuse:
                console.print(f"fusion: {fuse.describe()}", soft_wrap=True)
            info.update(model=str(model), **enc.config(), precision=precision)
            truncated = enc.prompts.truncated - cut
            info.update(texts=enc.prompts.wrapped - texts, truncated_texts=truncated)
            docs = enc.prompts.wrapped_by_side["passage"] - docs  # passages encoded (weak-pair rests included)
            docs_cut = enc.prompts.truncated_by_side["passage"] - docs_cut
            info.update(passages=docs, truncated_passages=docs_cut, truncated_passages_share=docs_cut / max(docs, 1))
            if truncated:
                console.print(
                    f"truncated {truncated} of {info['texts']} texts to fit --query-max-length/--passage-max-length"
                )
        info["skipped_rows"] = bad_rows().count
        info["warnings"] = bad_rows().warnings()
        write_evaluation(out, result, info, tag=f"llara-{how.value}")
        Console().print(metrics_table(f"{folder.name} ({split})", {name: result.metrics}, list(result.metrics)))
        console.print(f"wrote {out / 'run.trec'}, {out / 'metrics.json'} and {out / 'per_query.json'}")
        return {"metrics": result.metrics, "stats": dataset.stats, "qrels": folder / "qrels" / f"{split}.tsv"}

    if len(data) == 1:
        run(data[0], method, output)
        return
    evaluate_suite(data, output, method, run, model if method is not Method.bm25 else None, split)


def evaluate_suite(data: list[Path], output: Path, method: Method, run, model: str | None, split: str) -> None:
    """Several collections: BM25 and the method on each in turn, each tested against BM25, then the table."""
    from llara.data.io import atomic_write, write_json
    from llara.experiments.suite import collection_names, collection_row, compare_with_bm25, suite_report
    from llara.reporting import suite_markdown, suite_table

    names = collection_names(data)
    for folder in data:  # every folder there before the first is evaluated
        if not (folder / "qrels" / f"{split}.tsv").is_file():
            raise LlaraError(f"no qrels/{split}.tsv: not a BEIR dataset folder with that split", folder)
    rows = []
    for folder, name in zip(data, names, strict=True):
        console.print(f"[bold]{name}[/]")
        out = output / name
        bm25 = run(folder, Method.bm25, out / "bm25")
        if method is Method.bm25:
            rows.append(collection_row(name, bm25["stats"], bm25["metrics"], bm25["metrics"], None))
            continue
        ours = run(folder, method, out / method.value)
        compared = compare_with_bm25(out, bm25["qrels"], method.value)
        rows.append(collection_row(name, ours["stats"], bm25["metrics"], ours["metrics"], compared))
    report = suite_report(method.value, model, split, rows)
    write_json(output / "suite.json", report)
    with atomic_write(output / "suite.md") as f:
        f.write(suite_markdown(report))
    Console().print(suite_table(report))
    console.print(f"wrote {output / 'suite.json'} and {output / 'suite.md'}")


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
