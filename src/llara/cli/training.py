"""`llara pretrain`, `llara finetune`, `llara pairs`, `llara mine`, `llara pipeline`: adapt and fine-tune a
model, make its training rows, or all of it from a corpus.

Each command's options are the fields of its job's dataclass (PretrainOptions, FinetuneOptions, ...).
"""

from __future__ import annotations

import os

from llara.cli.options import command, console, warn
from llara.experiments.pipeline import PipelineOptions
from llara.settings import DEFAULT_MODEL
from llara.training.finetune.options import FinetuneOptions
from llara.training.mining import MineMethod, MineOptions, PairsOptions
from llara.training.pretrain.options import PretrainOptions


def first_rank() -> bool:
    """This process is the only one, or rank 0 of a torchrun group."""
    return int(os.environ.get("RANK", "0")) == 0


def _pretrain(o: PretrainOptions) -> None:
    """LLaRA adaptation (EBAE + EBAR in one forward pass) of a causal LM on plain text."""
    from llara.training.pretrain.trainer import run_pretrain

    run_pretrain(o.model, o.corpus, o, trust_remote_code=o.trust_remote_code)
    if first_rank():  # under torchrun, one line for the run
        console.print(f"wrote {o.output}")


def _finetune(o: FinetuneOptions) -> None:
    """Contrastive fine-tuning (InfoNCE, in-batch + hard negatives) of a model as a dense retriever."""
    from llara.training.finetune.trainer import finetune

    result = finetune(o.model, o.train, o, trust_remote_code=o.trust_remote_code)
    if first_rank():
        console.print(f"fine-tuned {result['steps']} steps on {result['examples']} rows; wrote {o.output}")


OLD_SPELLINGS = {("mine", "--model bm25"): "--method bm25"}  # a value, not a flag: _mine reads it


def _mine(o: MineOptions) -> None:
    """Hard negatives: retrieve for each judged query, sample from a rank range, skip judged positives."""
    from llara.training.mining import mine

    method, model = o.method, o.model or DEFAULT_MODEL
    if o.model == "bm25":  # the spellings before --method: --model bm25, or --model M for a dense model
        warn("--model bm25 is deprecated and will be removed in the next release: use --method bm25")
    elif o.model is not None and method is MineMethod.bm25:
        warn(f"--model without --method is deprecated: ranking with {o.model}; say --method dense --model M")
        method = MineMethod.dense
    model = "bm25" if method is MineMethod.bm25 else model
    kwargs = {} if model == "bm25" else {"recipe": o.recipe, "precision": o.precision}
    s = mine(model, o.data, o.output, o.split, o.rank_range, o.negatives, o.seed, batch_size=o.batch_size, **kwargs)
    skipped = ", ".join(f"{n} {why}" for why, n in s.skipped.items()) or "none"
    console.print(
        f"wrote {o.output}: {s.rows} rows, {s.negatives} negatives ({s.short} rows short of {o.negatives}); "
        f"skipped queries: {skipped}",
        soft_wrap=True,
    )


def _pairs(o: PairsOptions) -> None:
    """Weak supervision from an unlabeled corpus: (title, sentence, span or generated query -> its text) pairs
    with BM25 hard negatives."""
    from llara.training.mining import pairs

    s = pairs(
        o.corpus, o.output, o.query_source.value, o.negatives, o.rank_range, o.seed,
        generator=o.generator, generation_batch_size=o.generation_batch_size, precision=o.precision.value,
        min_rows=o.min_rows,
    )  # fmt: skip
    sources = ", ".join(f"{n} {source}" for source, n in s.sources.items())
    skipped = "; skipped documents: " + ", ".join(f"{n} {why}" for why, n in s.skipped.items()) if s.skipped else ""
    unused = (
        f"; {s.generated_unused} generated queries empty or copied from their document (auto's query instead)"
        if s.generated_unused
        else ""
    )
    rounds = f", up to {s.rounds} a document (--min-rows {o.min_rows})" if s.rounds > 1 else ""
    line = f"wrote {o.output}: {s.rows} rows ({sources} queries{rounds}), {s.negatives} negatives{skipped}{unused}"
    console.print(line, soft_wrap=True)


def _pipeline(o: PipelineOptions) -> None:
    """A corpus, no labels: adapt -> weak pairs -> fine-tune -> encode -> index, then a held-out check."""
    from llara.experiments.pipeline import run_pipeline
    from llara.reporting import pipeline_table

    report = run_pipeline(o.corpus, o.output, o, console)
    console.print(pipeline_table(report))
    console.print(
        f"search: llara search --model {report['model']} --index {report['index']} --corpus {o.corpus} "
        "--queries QUERIES.jsonl --output run.trec --method hybrid\n"
        f"with judgements: llara evaluate --model {report['model']} --data DIR --output OUT --method hybrid "
        "(DIR in BEIR layout: corpus.jsonl, queries.jsonl, qrels/test.tsv)",
        soft_wrap=True,
    )


pretrain = command(PretrainOptions, _pretrain, "pretrain")
finetune = command(FinetuneOptions, _finetune, "finetune")
mine = command(MineOptions, _mine, "mine")
pairs = command(PairsOptions, _pairs, "pairs")
pipeline = command(PipelineOptions, _pipeline, "pipeline")
