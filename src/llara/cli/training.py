"""`llara pretrain`, `llara finetune`, `llara pairs`, `llara mine`: adapt and fine-tune a model, and its training rows.

The training options' defaults are those of PretrainOptions and FinetuneOptions (llara.training): one home each.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from llara.cli.options import (
    ENCODE_BATCH_SIZE,
    BatchSize,
    Bf16Base,
    DeepSpeed,
    FastPaths,
    Full,
    GradAccum,
    GradientCheckpointing,
    KeepCheckpoints,
    LoggingSteps,
    LoraAlpha,
    LoraDropout,
    LoraR,
    MaxSteps,
    MaxTime,
    Model,
    Precision,
    Recipe,
    Resume,
    SaveEvery,
    Seed,
    SpecialLr,
    TrustRemoteCode,
    console,
    names,
    numbers,
    settings,
)
from llara.experiments.pipeline import PipelineOptions
from llara.training.finetune.options import FULL_LR, PROFILES, FinetuneOptions
from llara.training.options import LORA_SHORT
from llara.training.pretrain.options import PretrainOptions

P, F = PretrainOptions, FinetuneOptions  # the defaults


def first_rank() -> bool:
    """This process is the only one, or rank 0 of a torchrun group."""
    return int(os.environ.get("RANK", "0")) == 0


def _by_device(key: str) -> str:
    """A fine-tuning default that depends on the device (FinetuneOptions' PROFILES), for --help."""
    return f"(default: {PROFILES['cpu'][key]:g} on a CPU, {PROFILES['gpu'][key]:g} on a GPU)"


def pretrain(
    corpus: Annotated[
        Path,
        typer.Option(
            help='.txt (blank-line separated), JSONL {"text"} / {"title","text"} / BEIR corpus.jsonl, '
            'or reference rows {"input","output_summarize","output_predict"}'
        ),
    ],
    output: Annotated[Path, typer.Option(help="folder for the adapted, merged model (and OUTPUT-checkpoints)")],
    model: Model = "smollm2",
    recipe: Annotated[
        str, typer.Option(help="a built-in recipe name (reference | paper) or a recipe file (TOML/JSON)")
    ] = P.recipe,
    chunk_tokens: Annotated[
        int, typer.Option(help="tokens per joint training row: prefix + text + both suffixes (reference cutoff_len)")
    ] = P.chunk_tokens,
    lm_loss: Annotated[
        bool,
        typer.Option(
            help="add the next-token LM loss on the passage, as the reference code does (off by default: on "
            "small models it swamps the bag-of-words terms; benchmarks/RESULTS.md)"
        ),
    ] = P.lm_loss,
    remove_stop_words: Annotated[
        bool, typer.Option(help="drop punctuation and NLTK English stop words from the bag-of-words targets")
    ] = P.remove_stop_words,
    max_steps: MaxSteps = P.max_steps,
    max_time: MaxTime = P.max_time,
    lr: Annotated[float, typer.Option(help="learning rate (LoRA weights, or all weights with --full)")] = P.lr,
    special_lr: SpecialLr = P.special_lr,
    batch_size: Annotated[int, typer.Option(help="chunks per device per step")] = P.batch_size,
    grad_accum: GradAccum = P.grad_accum,
    full: Full = P.full,
    lora_r: LoraR = P.lora_r,
    lora_alpha: LoraAlpha = P.lora_alpha,
    lora_dropout: LoraDropout = P.lora_dropout,
    lora_targets: Annotated[str, typer.Option(help="comma-separated modules")] = ",".join(LORA_SHORT),
    gradient_checkpointing: GradientCheckpointing = P.gradient_checkpointing,
    precision: Precision = P.precision,
    bf16_base: Bf16Base = P.bf16_base,
    fast_paths: FastPaths = P.fast_paths,
    save_every: SaveEvery = P.save_every,
    keep_checkpoints: KeepCheckpoints = P.keep_checkpoints,
    logging_steps: LoggingSteps = P.logging_steps,
    save_at_minutes: Annotated[str, typer.Option(help="also checkpoint at these minutes, e.g. 3,12")] = "",
    resume: Resume = P.resume,
    seed: Seed = P.seed,
    deepspeed: DeepSpeed = P.deepspeed,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """LLaRA adaptation (EBAE + EBAR in one forward pass) of a causal LM on plain text."""
    params = dict(locals())
    from llara.training.pretrain.trainer import run_pretrain

    minutes = numbers("--save-at-minutes", save_at_minutes)
    opts = settings(PretrainOptions, params, save_at_minutes=minutes, lora_targets=names(lora_targets))
    run_pretrain(model, corpus, opts, trust_remote_code=trust_remote_code)
    if first_rank():  # under torchrun, one line for the run
        console.print(f"wrote {output}")


def finetune(
    train: Annotated[Path, typer.Option(help='JSONL rows {"query", "pos": [...], "neg": [...]}')],
    output: Annotated[Path, typer.Option(help="folder for the fine-tuned (merged) model")],
    model: Model = "smollm2",
    recipe: Recipe = F.recipe,
    group_size: Annotated[
        int | None,
        typer.Option(help=f"passages per query: 1 positive + group-size - 1 negatives {_by_device('group_size')}"),
    ] = F.group_size,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature")] = F.temperature,
    query_max_length: Annotated[
        int | None,
        typer.Option(
            help=f"query tokens, prompt included (saved: the model encodes with it) {_by_device('query_max_length')}"
        ),
    ] = F.query_max_length,
    passage_max_length: Annotated[
        int | None,
        typer.Option(
            help="passage tokens, prompt included (saved: the model encodes with it) "
            + _by_device("passage_max_length")
        ),
    ] = F.passage_max_length,
    negatives_cross_device: Annotated[
        bool, typer.Option(help="with torchrun: every query also sees the other ranks' passages")
    ] = F.negatives_cross_device,
    grad_cache: Annotated[
        bool, typer.Option(help="GradCache: big batches, one chunk's activations at a time")
    ] = F.grad_cache,
    chunk_size: Annotated[int, typer.Option(help="texts per GradCache chunk")] = F.chunk_size,
    max_steps: MaxSteps = F.max_steps,
    max_time: MaxTime = F.max_time,
    lr: Annotated[float | None, typer.Option(help=f"learning rate {_by_device('lr')}; {FULL_LR:g} with --full")] = F.lr,
    special_lr: SpecialLr = F.special_lr,
    batch_size: Annotated[int, typer.Option(help="queries per device per step")] = F.batch_size,
    grad_accum: GradAccum = F.grad_accum,
    full: Full = F.full,
    lora_r: LoraR = F.lora_r,
    lora_alpha: LoraAlpha = F.lora_alpha,
    lora_dropout: LoraDropout = F.lora_dropout,
    gradient_checkpointing: GradientCheckpointing = F.gradient_checkpointing,
    precision: Precision = F.precision,
    bf16_base: Bf16Base = F.bf16_base,
    fast_paths: FastPaths = F.fast_paths,
    save_every: SaveEvery = F.save_every,
    keep_checkpoints: KeepCheckpoints = F.keep_checkpoints,
    logging_steps: LoggingSteps = F.logging_steps,
    resume: Resume = F.resume,
    seed: Seed = F.seed,
    deepspeed: DeepSpeed = F.deepspeed,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Contrastive fine-tuning (InfoNCE, in-batch + hard negatives) of a model as a dense retriever."""
    params = dict(locals())
    from llara.training.finetune.trainer import finetune as run_finetune

    result = run_finetune(model, train, settings(FinetuneOptions, params), trust_remote_code=trust_remote_code)
    if first_rank():
        console.print(f"fine-tuned {result['steps']} steps on {result['examples']} rows; wrote {output}")


def mine(
    data: Annotated[Path, typer.Option(help="dataset folder in BEIR layout")],
    output: Annotated[Path, typer.Option(help="JSONL training file to write")],
    model: Annotated[str, typer.Option("--model", "-m", help="bm25, or a dense model (as for evaluate)")] = "bm25",
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv whose queries get rows")] = "train",
    range_: Annotated[str, typer.Option("--range", help="ranked positions start-end to sample from")] = "10-100",
    negatives: Annotated[int, typer.Option(help="hard negatives per query")] = 15,
    seed: Seed = 42,
    recipe: Recipe = None,
    batch_size: BatchSize = ENCODE_BATCH_SIZE,
    precision: Precision = "auto",
) -> None:
    """Hard negatives: retrieve for each judged query, sample from a rank range, skip judged positives."""
    from llara.training.mining import mine as run_mine

    kwargs = {} if model == "bm25" else {"recipe": recipe, "precision": precision}
    s = run_mine(model, data, output, split, range_, negatives, seed, batch_size=batch_size, **kwargs)
    skipped = ", ".join(f"{n} {why}" for why, n in s.skipped.items()) or "none"
    console.print(
        f"wrote {output}: {s.rows} rows, {s.negatives} negatives ({s.short} rows short of {negatives}); "
        f"skipped queries: {skipped}"
    )


class PairQuery(StrEnum):
    auto = "auto"
    title = "title"
    sentence = "sentence"
    span = "span"


def pairs(
    corpus: Annotated[Path, typer.Option(help="corpus.jsonl (BEIR: _id, title, text); no labels needed")],
    output: Annotated[Path, typer.Option(help="JSONL training file to write")],
    query: Annotated[
        PairQuery,
        typer.Option(
            help="the query: the title, one sentence (the rest of the text is the positive), a span of 4-16 "
            "words (likewise), or auto: the first of these each document can give"
        ),
    ] = PairQuery.auto,
    negatives: Annotated[int, typer.Option(help="BM25 hard negatives per query")] = 15,
    range_: Annotated[str, typer.Option("--range", help="BM25 ranked positions start-end to sample from")] = "0-50",
    seed: Seed = 42,
) -> None:
    """Weak supervision from an unlabeled corpus: (title, sentence or span -> its text) pairs with BM25 hard
    negatives."""
    from llara.training.mining import pairs as run_pairs

    s = run_pairs(corpus, output, query.value, negatives, range_, seed)
    sources = ", ".join(f"{n} {source}" for source, n in s.sources.items())
    skipped = "; skipped documents: " + ", ".join(f"{n} {why}" for why, n in s.skipped.items()) if s.skipped else ""
    line = f"wrote {output}: {s.rows} rows ({sources} queries), {s.negatives} negatives{skipped}"
    console.print(line, soft_wrap=True)


def pipeline(
    corpus: Annotated[Path, typer.Option(help="corpus.jsonl (BEIR: _id, title, text); no labels needed")],
    output: Annotated[
        Path, typer.Option(help="folder for the model, index, pairs and pipeline.json (rerun to resume)")
    ],
    model: Model = PipelineOptions.model,
    pretrain_minutes: Annotated[
        float, typer.Option(help="EBAE + EBAR adaptation budget")
    ] = PipelineOptions.pretrain_minutes,
    finetune_minutes: Annotated[
        float, typer.Option(help="contrastive fine-tuning budget")
    ] = PipelineOptions.finetune_minutes,
) -> None:
    """A corpus, no labels: adapt -> weak pairs -> fine-tune -> encode -> index, then a held-out check."""
    from llara.experiments.pipeline import run_pipeline
    from llara.reporting import pipeline_table

    opts = PipelineOptions(model=model, pretrain_minutes=pretrain_minutes, finetune_minutes=finetune_minutes)
    report = run_pipeline(corpus, output, opts, console)
    console.print(pipeline_table(report))
    console.print(
        f"search: llara search --model {report['model']} --index {report['index']} --corpus {corpus} "
        "--queries QUERIES.jsonl --output run.trec --method hybrid\n"
        f"with judgements: llara evaluate --model {report['model']} --data DIR --output OUT --method hybrid "
        "(DIR in BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)",
        soft_wrap=True,
    )
