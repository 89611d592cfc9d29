"""The `llara` command: thin typer wrappers over the library. Bad input exits 2 with one line."""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from llara.errors import LlaraError

if TYPE_CHECKING:
    from llara.data.io import BadRows

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

QueryLengthOpt = Annotated[
    int | None, typer.Option(help="query tokens, prompt included (default: the model's llara.json, else 64)")
]
PassageLengthOpt = Annotated[
    int | None, typer.Option(help="passage tokens, prompt included (default: the model's llara.json, else 256)")
]


class Method(StrEnum):
    dense = "dense"
    bm25 = "bm25"
    hybrid = "hybrid"


class FusionMethod(StrEnum):
    rrf = "rrf"
    score = "score"


FusionOpt = Annotated[
    FusionMethod | None,
    typer.Option("--fusion", help="--method hybrid: rrf (reciprocal rank fusion, k=60; default) or score (min-max)"),
]
FusionWeightOpt = Annotated[
    float | None, typer.Option(help="--fusion score: weight of the dense run, BM25 gets 1 - W (default 0.5)")
]


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and results")] = False,
    skip_bad_rows: Annotated[
        bool, typer.Option("--skip-bad-rows", help="skip and count malformed input rows instead of stopping")
    ] = False,
) -> None:
    from llara.data.io import BadRows, set_bad_rows

    _state["debug"] = debug
    policy = set_bad_rows(BadRows(skip=skip_bad_rows))
    ctx.call_on_close(lambda: _print_warnings(policy))
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


def _print_warnings(policy: BadRows) -> None:
    """When the command ends, error or not: one line per kind of odd row kept or left out
    ("2 empty documents kept (first: corpus.jsonl:17)"), then "skipped N bad rows (first: ...)"."""
    for line in [*policy.warnings(), policy.summary()]:
        if line:  # escape: ids and paths may look like rich markup ("[/b]")
            console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True, highlight=False)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option(help="dataset folder in BEIR layout")],
    output: Annotated[Path, typer.Option(help="folder for run.trec and metrics.json")],
    model: ModelOpt = "smollm2",
    method: Annotated[Method, typer.Option(help="dense (the model), bm25, or hybrid (both fused)")] = Method.dense,
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv")] = "test",
    fusion: FusionOpt = None,
    fusion_weight: FusionWeightOpt = None,
    tune_on: Annotated[
        str | None, typer.Option(help="--fusion score: pick the weight on qrels/<TUNE_ON>.tsv (e.g. dev), not --split")
    ] = None,
    recipe: RecipeOpt = None,
    top_k: Annotated[int, typer.Option(help="documents retrieved per query")] = 1000,
    batch_size: int = 32,
    max_tokens_per_batch: Annotated[
        int | None, typer.Option(help="token budget per batch (rows x longest row) instead of --batch-size")
    ] = None,
    query_max_length: QueryLengthOpt = None,
    passage_max_length: PassageLengthOpt = None,
    precision: Annotated[
        str, typer.Option(help="auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)")
    ] = "auto",
    trust_remote_code: bool = False,
) -> None:
    """Retrieve for every judged query of a BEIR dataset and score the run with ir-measures."""
    from llara.data.beir import load_beir
    from llara.data.io import bad_rows, write_json
    from llara.evaluation import evaluate_bm25, evaluate_dense, evaluate_hybrid, tuning_split
    from llara.reporting import metrics_table
    from llara.retrieval.fusion import fusion_options
    from llara.retrieval.runs import write_trec_run

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
        name = f"{model} ({encoder.recipe.name})" + (f" + bm25, {fuse.describe()}" if fuse else "")
        info.update(model=str(model), **encoder.config(), precision=precision)
        info.update(texts=encoder.prompts.wrapped, truncated_texts=encoder.prompts.truncated)
        if encoder.prompts.truncated:
            console.print(
                f"truncated {encoder.prompts.truncated} of {encoder.prompts.wrapped} texts to fit "
                "--query-max-length/--passage-max-length"
            )
    info["skipped_rows"] = bad_rows().count
    info["warnings"] = bad_rows().warnings()
    write_trec_run(output / "run.trec", result.run, tag=f"llara-{method.value}")
    write_json(output / "per_query.json", result.per_query)
    write_json(output / "metrics.json", {**result.metrics, "info": {**info, **result.info, **result.timings}})
    Console().print(metrics_table(f"{data.name} ({split})", {name: result.metrics}, list(result.metrics)))
    console.print(f"wrote {output / 'run.trec'}, {output / 'metrics.json'} and {output / 'per_query.json'}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="folder for data, models and results")] = Path("llara-demo"),
    quick: Annotated[bool, typer.Option(help="a smaller, faster run")] = False,
    model: ModelOpt = "smollm2",
) -> None:
    """The whole pipeline on data that ships with pip packages (arXiv titles -> abstracts)."""
    from llara.experiments.demo import run_demo

    run_demo(output, quick=quick, model=model)


# --- further commands (pretrain, finetune, mine, pairs, encode, index, search, explain, export) go below,
# each a thin wrapper over its module; keep this file free of logic.


# --- encode / index / search (issue 5) ---
class IndexType(StrEnum):
    flat = "flat"
    hnsw = "hnsw"
    ivfpq = "ivfpq"


def _device_for_rank() -> str | None:
    """Under torchrun each process takes the GPU of its local rank (CPU when there is none)."""
    import torch

    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


@app.command()
def encode(
    corpus: Annotated[Path, typer.Option(help="corpus.jsonl (BEIR: _id, title, text)")],
    output: Annotated[Path, typer.Option(help="folder for the .npy chunks, ids and manifests")],
    model: ModelOpt = "smollm2",
    recipe: RecipeOpt = None,
    shard: Annotated[
        str | None, typer.Option(help="i/n: encode the i-th of n slices (default: torchrun's rank)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="finish an interrupted run, re-encoding only missing chunks")] = False,
    dtype: Annotated[str, typer.Option(help="float32 | float16 (storage of the embeddings)")] = "float32",
    batch_size: int = 32,
    max_tokens_per_batch: Annotated[
        int | None, typer.Option(help="token budget per batch (rows x longest row) instead of --batch-size")
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="documents per .npy file (and per resume step)")] = 1024,
    passage_max_length: PassageLengthOpt = None,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16")] = "auto",
    trust_remote_code: bool = False,
) -> None:
    """Encode a corpus to memory-mappable .npy chunks (streaming, resumable, shardable)."""
    from llara.inference.corpus import encode_corpus_file, parse_shard, scan_corpus
    from llara.inference.encoder import LlaraEncoder

    i, n = parse_shard(shard)
    scan_corpus(corpus)  # validate before loading a model
    encoder = LlaraEncoder.from_pretrained(
        model,
        recipe=recipe,
        passage_max_length=passage_max_length,
        precision=precision,
        trust_remote_code=trust_remote_code,
        device=_device_for_rank(),
    )
    m = encode_corpus_file(encoder, corpus, output, (i, n), resume, dtype, batch_size, max_tokens_per_batch, chunk_size)
    console.print(f"shard {i}/{n}: rows {m['rows'][0]}..{m['rows'][1]} in {output} ({m['encoded_now']} encoded now)")


@app.command()
def index(
    embeddings: Annotated[Path, typer.Option(help="folder written by `llara encode` (all shards)")],
    output: Annotated[Path, typer.Option(help="index folder to write")],
    type: Annotated[IndexType, typer.Option("--type", help="flat (exact), hnsw or ivfpq")] = IndexType.flat,
    hnsw_m: Annotated[int, typer.Option(help="HNSW graph degree")] = 32,
    ef_construction: Annotated[int, typer.Option(help="HNSW build beam")] = 40,
    ef_search: Annotated[int, typer.Option(help="HNSW search beam (default, stored)")] = 512,
    nlist: Annotated[int | None, typer.Option(help="IVF cells (default ~4 sqrt(N))")] = None,
    pq_m: Annotated[int | None, typer.Option(help="PQ sub-vectors (must divide dim)")] = None,
    pq_bits: Annotated[int | None, typer.Option(help="bits per PQ code (default 8)")] = None,
    nprobe: Annotated[int, typer.Option(help="IVF cells searched (default, stored)")] = 32,
) -> None:
    """Build a FAISS inner-product index (exact, HNSW or IVF-PQ) from encoded shards."""
    from llara.retrieval.index import IndexParams, build_index

    params = IndexParams(hnsw_m, ef_construction, ef_search, nlist, pq_m, pq_bits, nprobe)
    meta = build_index(embeddings, output, type.value, params)
    console.print(f"wrote {output}: {meta['index_type']} index of {meta['count']} x {meta['dim']}")


@app.command()
def search(
    queries: Annotated[Path, typer.Option(help="queries.jsonl (_id, text)")],
    output: Annotated[Path, typer.Option(help="TREC run file to write")],
    index: Annotated[Path | None, typer.Option(help="folder written by `llara index` (dense, hybrid)")] = None,
    model: ModelOpt = "smollm2",
    method: Annotated[Method, typer.Option(help="dense (the index), bm25 (--corpus), hybrid (both)")] = Method.dense,
    corpus: Annotated[Path | None, typer.Option(help="corpus.jsonl for BM25 (--method bm25 or hybrid)")] = None,
    fusion: FusionOpt = None,
    fusion_weight: FusionWeightOpt = None,
    top_k: Annotated[int, typer.Option(help="documents retrieved per query")] = 1000,
    batch_size: int = 32,
    max_tokens_per_batch: int | None = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search beam (default: the index's)")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF cells searched (default: the index's)")] = None,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16")] = "auto",
    trust_remote_code: bool = False,
) -> None:
    """Encode queries with the index's recipe, search, and write a TREC run (BM25 and hybrid: --corpus)."""
    from llara.data.beir import read_corpus, read_queries
    from llara.retrieval.bm25 import BM25
    from llara.retrieval.fusion import fusion_options, hybrid_search
    from llara.retrieval.index import DenseIndex, dense_run
    from llara.retrieval.runs import write_trec_run

    fuse = fusion_options(method.value, fusion and fusion.value, fusion_weight)
    if (method is Method.dense) != (corpus is None) or (method is Method.bm25) != (index is None):
        raise LlaraError("--method dense takes --index, bm25 takes --corpus, hybrid takes both")
    dense = DenseIndex(index) if index else None  # refuses an index whose files do not match its metadata
    docs = read_corpus(corpus) if corpus else None
    found = read_queries(queries)  # validate before loading a model
    if dense is None:
        run = BM25.from_corpus(docs).search(list(found), list(found.values()), top_k)
    else:
        from llara.inference.encoder import LlaraEncoder

        dense.configure(ef_search=ef_search, nprobe=nprobe)
        encoder = LlaraEncoder.from_pretrained(
            model,
            recipe=dense.meta["recipe"],
            query_max_length=dense.meta["query_max_length"],
            precision=precision,
            trust_remote_code=trust_remote_code,
        )
        if fuse:
            run = hybrid_search(found, docs, dense, encoder, fuse, top_k, batch_size, max_tokens_per_batch)
        else:
            run = dense_run(dense, encoder, found, top_k, batch_size, max_tokens_per_batch)
    tag = dense.meta["index_type"] if method is Method.dense else method.value
    write_trec_run(output, run, tag=f"llara-{tag}")
    console.print(f"wrote {output}: top {top_k} for {len(found)} queries" + (f", {fuse.describe()}" if fuse else ""))


# --- finetune / mine / pairs (issue 4) ---
@app.command()
def finetune(
    train: Annotated[Path, typer.Option(help='JSONL rows {"query", "pos": [...], "neg": [...]}')],
    output: Annotated[Path, typer.Option(help="folder for the fine-tuned (merged) model")],
    model: ModelOpt = "smollm2",
    recipe: RecipeOpt = None,
    group_size: Annotated[int, typer.Option(help="passages per query: 1 positive + group-size - 1 negatives")] = 16,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature")] = 0.01,
    query_max_length: int = 64,
    passage_max_length: int = 160,
    negatives_cross_device: Annotated[
        bool, typer.Option(help="with torchrun: every query also sees the other ranks' passages")
    ] = False,
    grad_cache: Annotated[bool, typer.Option(help="GradCache: big batches, one chunk's activations at a time")] = False,
    chunk_size: Annotated[int, typer.Option(help="texts per GradCache chunk")] = 8,
    max_steps: Annotated[int | None, typer.Option(help="optimizer steps")] = None,
    max_time: Annotated[float | None, typer.Option(help="minutes; stop and save when reached")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: 3e-4 with LoRA, 1e-5 with --full)")] = None,
    special_lr: Annotated[float, typer.Option(help="learning rate of the special-token embeddings")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="queries per device per step")] = 8,
    grad_accum: int = 1,
    full: Annotated[bool, typer.Option(help="full fine-tuning instead of LoRA")] = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    gradient_checkpointing: bool = False,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16")] = "auto",
    save_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 200,
    logging_steps: Annotated[int, typer.Option(help="steps between loss logs")] = 5,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint of this output")] = False,
    seed: int = 42,
    deepspeed: Annotated[str | None, typer.Option(help="DeepSpeed JSON config")] = None,
    trust_remote_code: bool = False,
) -> None:
    """Contrastive fine-tuning (InfoNCE, in-batch + hard negatives) of a model as a dense retriever."""
    from llara.training.common import TrainOptions
    from llara.training.finetune.trainer import FinetuneOptions
    from llara.training.finetune.trainer import finetune as run_finetune

    opts = TrainOptions(
        output=output,
        max_steps=max_steps,
        max_time=max_time,
        lr=lr or (1e-5 if full else 3e-4),  # the reference's LoRA rate; full weights need far less
        special_lr=special_lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        precision=precision,
        save_every=save_every,
        logging_steps=logging_steps,
        resume=resume,
        seed=seed,
        full=full,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        gradient_checkpointing=gradient_checkpointing,
        deepspeed=deepspeed,
    )
    ft = FinetuneOptions(
        group_size, temperature, query_max_length, passage_max_length, negatives_cross_device, grad_cache, chunk_size
    )
    result = run_finetune(model, train, opts, ft, recipe=recipe, trust_remote_code=trust_remote_code)
    console.print(f"fine-tuned {result['steps']} steps on {result['examples']} rows; wrote {output}")


@app.command()
def mine(
    data: Annotated[Path, typer.Option(help="dataset folder in BEIR layout")],
    output: Annotated[Path, typer.Option(help="JSONL training file to write")],
    model: Annotated[str, typer.Option("--model", "-m", help="bm25, or a dense model (as for evaluate)")] = "bm25",
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv whose queries get rows")] = "train",
    range_: Annotated[str, typer.Option("--range", help="ranked positions start-end to sample from")] = "10-100",
    negatives: Annotated[int, typer.Option(help="hard negatives per query")] = 15,
    seed: int = 42,
    recipe: RecipeOpt = None,
    batch_size: int = 32,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16")] = "auto",
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
    title = "title"
    sentence = "sentence"


@app.command()
def pairs(
    corpus: Annotated[Path, typer.Option(help="corpus.jsonl (BEIR: _id, title, text); no labels needed")],
    output: Annotated[Path, typer.Option(help="JSONL training file to write")],
    query: Annotated[PairQuery, typer.Option(help="the query: the title or one sentence")] = PairQuery.title,
    negatives: Annotated[int, typer.Option(help="BM25 hard negatives per query")] = 15,
    range_: Annotated[str, typer.Option("--range", help="BM25 ranked positions start-end to sample from")] = "0-50",
    seed: int = 42,
) -> None:
    """Weak supervision from an unlabeled corpus: (title -> its text) pairs with BM25 hard negatives."""
    from llara.training.mining import pairs as run_pairs

    s = run_pairs(corpus, output, query.value, negatives, range_, seed)
    skipped = ", ".join(f"{n} {why}" for why, n in s.skipped.items()) or "none"
    console.print(f"wrote {output}: {s.rows} rows, {s.negatives} negatives; skipped documents: {skipped}")


# --- pretrain (issue 3) ---
@app.command()
def pretrain(
    corpus: Annotated[
        Path,
        typer.Option(
            help='.txt (blank-line separated), JSONL {"text"} / {"title","text"} / BEIR corpus.jsonl, '
            'or reference rows {"input","output_summarize","output_predict"}'
        ),
    ],
    output: Annotated[Path, typer.Option(help="folder for the adapted, merged model (and OUTPUT-checkpoints)")],
    model: ModelOpt = "smollm2",
    recipe: Annotated[str, typer.Option(help="reference | paper")] = "reference",
    chunk_tokens: Annotated[
        int, typer.Option(help="tokens per joint training row: prefix + text + both suffixes (reference cutoff_len)")
    ] = 128,
    lm_loss: Annotated[
        bool,
        typer.Option(
            help="add the next-token LM loss on the passage, as the reference code does (off by default: on "
            "small models it swamps the bag-of-words terms; benchmarks/RESULTS.md)"
        ),
    ] = False,
    remove_stop_words: Annotated[
        bool, typer.Option(help="drop punctuation and NLTK English stop words from the bag-of-words targets")
    ] = False,
    max_steps: Annotated[int | None, typer.Option(help="optimizer steps")] = None,
    max_time: Annotated[float | None, typer.Option(help="minutes; stop, checkpoint and save when reached")] = None,
    lr: Annotated[float, typer.Option(help="learning rate (LoRA weights, or all weights with --full)")] = 1e-4,
    special_lr: Annotated[float, typer.Option(help="learning rate of the special-token embeddings")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="chunks per device per step")] = 8,
    grad_accum: int = 1,
    full: Annotated[bool, typer.Option(help="full fine-tuning instead of LoRA")] = False,
    lora_r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: Annotated[
        float, typer.Option(help="dropout on LoRA inputs; off by default: its masks cost ~1.3x step time on CPU")
    ] = 0.0,
    lora_targets: Annotated[str, typer.Option(help="comma-separated modules")] = "q,k,v,o,gate,up,down",
    gradient_checkpointing: bool = False,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16")] = "auto",
    save_every: Annotated[int, typer.Option(help="steps between checkpoints")] = 200,
    logging_steps: Annotated[int, typer.Option(help="steps between loss logs")] = 5,
    save_at_minutes: Annotated[str, typer.Option(help="also checkpoint at these minutes, e.g. 3,12")] = "",
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint of this output")] = False,
    seed: int = 42,
    deepspeed: Annotated[str | None, typer.Option(help="DeepSpeed JSON config (see configs/)")] = None,
    trust_remote_code: bool = False,
) -> None:
    """LLaRA adaptation (EBAE + EBAR in one forward pass) of a causal LM on plain text."""
    from llara.training.common import TrainOptions
    from llara.training.pretrain.trainer import run_pretrain

    try:
        minutes = [float(m) for m in save_at_minutes.split(",") if m.strip()]
    except ValueError:
        raise LlaraError(f"--save-at-minutes: not a list of numbers: {save_at_minutes!r}") from None
    opts = TrainOptions(
        output=output,
        max_steps=max_steps,
        max_time=max_time,
        lr=lr,
        special_lr=special_lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        precision=precision,
        save_every=save_every,
        logging_steps=logging_steps,
        save_at_minutes=minutes,
        resume=resume,
        seed=seed,
        full=full,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=[t.strip() for t in lora_targets.split(",") if t.strip()],
        gradient_checkpointing=gradient_checkpointing,
        deepspeed=deepspeed,
    )
    run_pretrain(
        model,
        corpus,
        opts,
        recipe=recipe,
        chunk_tokens=chunk_tokens,
        lm_loss=lm_loss,
        remove_stop_words=remove_stop_words,
        trust_remote_code=trust_remote_code,
    )
    console.print(f"wrote {output}")


# --- explain / export (issue 6) ---
class Side(StrEnum):
    passage = "passage"
    query = "query"


class ExportFormat(StrEnum):
    hf = "hf"
    sentence_transformers = "sentence-transformers"


@app.command()
def explain(
    text: Annotated[str | None, typer.Argument(help="a text to decode (or give --query and --document)")] = None,
    model: ModelOpt = "smollm2",
    query: Annotated[str | None, typer.Option(help="a query, shown beside --document")] = None,
    document: Annotated[str | None, typer.Option(help="a document, shown beside --query")] = None,
    side: Annotated[Side, typer.Option(help="prompt for TEXT: passage (EBAE) or query (EBAR)")] = Side.passage,
    top_k: Annotated[int, typer.Option(help="tokens shown")] = 20,
    recipe: RecipeOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    trust_remote_code: bool = False,
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


@app.command()
def export(
    output: Annotated[Path, typer.Option(help="folder to write (built under a temporary name, then renamed)")],
    model: ModelOpt = "smollm2",
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="hf (plain HF folder) or sentence-transformers")
    ] = ExportFormat.hf,
    recipe: RecipeOpt = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing non-empty OUTPUT")] = False,
    trust_remote_code: bool = False,
) -> None:
    """Export a model (LoRA adapters merged, tokenizer with the special tokens, llara.json) for other tools."""
    from llara.integrations.export import export as run_export

    out = run_export(model, output, fmt.value, recipe=recipe, overwrite=overwrite, trust_remote_code=trust_remote_code)
    console.print(f"wrote {out} ({fmt.value})")


# --- ablate (issue 14) ---
@app.command()
def ablate(
    data: Annotated[Path, typer.Option(help="dataset folder in BEIR layout; its corpus.jsonl is the adaptation text")],
    output: Annotated[Path, typer.Option(help="folder for models, runs, ablation.json and ablation.md (resumable)")],
    model: ModelOpt = "smollm2",
    split: Annotated[str, typer.Option(help="qrels/<split>.tsv: evaluated only, never trained on")] = "test",
    train: Annotated[
        Path | None, typer.Option(help='JSONL rows {"query", "pos", "neg"} (default: weak pairs from the corpus)')
    ] = None,
    seeds: Annotated[int, typer.Option(help="fine-tuning seeds (each: raw and adapted model alike)")] = 3,
    pretrain_minutes: Annotated[float, typer.Option(help="adaptation budget in minutes")] = 12.0,
    finetune_minutes: Annotated[float, typer.Option(help="budget of each fine-tuning run in minutes")] = 12.0,
    pretrain_steps: Annotated[int | None, typer.Option(help="adaptation steps instead of minutes")] = None,
    finetune_steps: Annotated[int | None, typer.Option(help="fine-tuning steps instead of minutes")] = None,
    metrics: Annotated[str, typer.Option(help="comma-separated ir-measures names")] = "nDCG@10,RR@10,R@100",
) -> None:
    """Does EBAE + EBAR adaptation before fine-tuning beat fine-tuning directly? All arms on your data, with tests."""
    from llara.experiments.ablation import AblationOptions, run_ablation

    budget = (pretrain_minutes, finetune_minutes, pretrain_steps, finetune_steps)
    opts = AblationOptions(model, split, train, seeds, *budget, metrics=metrics.split(","))
    run_ablation(data, output, opts, console)


# --- compare (issue 14) ---
@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="TREC run files (e.g. OUT/run.trec of `llara evaluate`)")],
    qrels: Annotated[Path, typer.Option(help="judgements: BEIR qrels TSV (query-id corpus-id score) or TREC qrels")],
    metrics: Annotated[str, typer.Option(help="comma-separated ir-measures names")] = "nDCG@10,RR@10,R@100",
    baseline: Annotated[Path | None, typer.Option(help="the run the others are compared with (default: first)")] = None,
    output: Annotated[Path | None, typer.Option(help="JSON file for the table, p-values and settings")] = None,
    permutations: Annotated[int, typer.Option(help="randomization test resamples (exact if 2^queries <= it)")] = 10_000,
    alpha: Annotated[float, typer.Option(help="significance level for the * marker (Holm-corrected)")] = 0.05,
    seed: int = 0,
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


# --- serve (issue 15) ---
@app.command()
def serve(
    model: ModelOpt = "smollm2",
    index: Annotated[Path | None, typer.Option(help="folder written by `llara index`, for POST /search")] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="corpus.jsonl, for titles and bm25/hybrid search (default: the index's)")
    ] = None,
    host: Annotated[str, typer.Option(help="address to bind; a non-loopback one needs --api-key")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one, printed at start)")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(envvar="LLARA_API_KEY", help="require 'Authorization: Bearer KEY' on every request")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="the name clients send as 'model' (default: --model as given)")
    ] = None,
    recipe: RecipeOpt = None,
    query_max_length: Annotated[int | None, typer.Option(help="default: the index's, the model's, or 64")] = None,
    passage_max_length: Annotated[int | None, typer.Option(help="default: the index's, the model's, or 256")] = None,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16")] = "auto",
    max_batch: Annotated[int, typer.Option(help="texts per model batch, gathered from concurrent requests")] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(help="how long a request finding the model idle waits for company")
    ] = 5.0,
    rejoin_wait_ms: Annotated[
        float,
        typer.Option(
            help="after a batch for several clients, the longest wait for their next texts (and 1/4 of its time)"
        ),
    ] = 250.0,
    max_queue: Annotated[int, typer.Option(help="requests waiting or running at most; past it: 503")] = 256,
    max_inputs: Annotated[int, typer.Option(help="texts per embeddings request at most")] = 512,
    max_body_bytes: Annotated[int, typer.Option(help="request body size limit (413 past it)")] = 4 << 20,
    max_top_k: Annotated[int, typer.Option(help="largest top_k a search may ask")] = 1000,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search beam (default: the index's)")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF cells searched (default: the index's)")] = None,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
    trust_remote_code: bool = False,
) -> None:
    """Serve embeddings (OpenAI-compatible POST /v1/embeddings) and search (POST /search) over HTTP."""
    options = dict(locals())  # the parameters are ServeOptions' fields, one to one
    from llara.serving import ServeOptions, run_server

    run_server(ServeOptions(**options))


def main() -> None:
    try:
        app()
    except LlaraError as e:
        if _state["debug"]:
            raise
        # escape: ids and paths in the message may look like rich markup ("[/b]")
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # out of memory despite the estimate: say so and what to change, not a traceback
        if _state["debug"] or not _out_of_memory(e):
            raise
        console.print(
            f"[bold red]error:[/] out of memory ({escape(str(e).splitlines()[0][:200])}); lower --batch-size, "
            "--group-size or the max lengths, or add --grad-cache / --gradient-checkpointing",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e)


if __name__ == "__main__":
    main()
