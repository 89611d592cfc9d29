"""`llara pipeline`: a corpus and no labels in, a fine-tuned model and a searchable index out.

Stages, each the job its own command runs at that command's defaults (OUTPUT/stages/<name>.json records
a finished one; a rerun skips it, and training resumes from its checkpoints):

  adapt     EBAE + EBAR on the corpus text (`llara pretrain`), --pretrain-minutes; 0, the default,
            does not run it and fine-tunes --model itself (see ADAPT_MINUTES)
  pairs     weak pairs from the corpus (`llara pairs`), the documents of the check below held out
  finetune  contrastive fine-tuning of the model on them (`llara finetune`), --finetune-minutes
  encode    the corpus with the fine-tuned model (`llara encode`)
  index     a FAISS index of it (`llara index`, its type by size)
  check     BM25, the model and the default hybrid on held-out weak pairs (llara.calibration)

The check is the honest signal a corpus without labels allows: documents none of the training rows
came from, each giving a query (title, sentence or span) whose one relevant document is the rest of it.
They are the first documents of the sample `--fusion auto` measures on later (same seed): all of it
where the corpus has 1,500 documents or more, a fifth of the corpus below that (the rest trains), so
on a small corpus the later choice also reads documents the model was fine-tuned on. How far the signal tracks real
judgements on the development suite is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from llara import settings
from llara.data.io import write_json
from llara.errors import LlaraError
from llara.experiments.demo import SAVE_EVERY, Stages, finished
from llara.settings import option
from llara.training.options import interrupted

HELD_OUT_PART = 5  # at most 1 / HELD_OUT_PART of the documents are held out of training for the check
# No adaptation by default: on the development suite (135M built-in model, 2 CPU cores) fine-tuning the
# raw model for 12 minutes matched or beat 12 + 12 minutes of adaptation + fine-tuning on all six
# collections for the hybrid, in half the time (benchmarks/RESULTS.md, "The paper's question on all six").
# The paper adapted for far longer, on GPUs: there --pretrain-minutes is the method.
ADAPT_MINUTES = 0.0


@dataclass(frozen=True)
class PipelineOptions:
    """`llara pipeline`'s settings; every other setting is the stage's own command's default."""

    corpus: Path | None = option(None, "corpus.jsonl (BEIR: _id, title, text); no labels needed", required=True)
    output: Path | None = option(
        None, "folder for the model, index, pairs and pipeline.json (rerun to resume)", required=True
    )
    model: str = settings.model()
    pretrain_minutes: float = option(
        ADAPT_MINUTES,
        "EBAE + EBAR adaptation budget in minutes; 0 (the default: it measured better at laptop scale) "
        "skips adaptation and fine-tunes --model itself",
    )
    finetune_minutes: float = option(12.0, "contrastive fine-tuning budget in minutes")

    def validate(self) -> None:
        """Both budgets before any stage runs (a bad fine-tuning budget would otherwise stop the pipeline
        only after adaptation)."""
        if not (self.pretrain_minutes >= 0 and self.finetune_minutes > 0) or not math.isfinite(
            self.pretrain_minutes + self.finetune_minutes
        ):
            raise LlaraError(
                "--pretrain-minutes must be 0 or more and --finetune-minutes more than 0, got "
                f"{self.pretrain_minutes} and {self.finetune_minutes}"
            )


def run_pipeline(corpus: Path, output: Path, opts: PipelineOptions, console: Console) -> dict:
    """Run (or resume) every stage; returns what OUTPUT/pipeline.json holds."""
    from llara.calibration import (
        WEAK_PAIRS,
        choose_fusion,
        index_reading,
        measure_on_weak_pairs,
        record_fusion,
        sample_weak_pairs,
    )
    from llara.data.beir import read_corpus

    opts.validate()
    docs = read_corpus(corpus)  # every row validated before anything runs
    # the first documents of the check's seeded sample, at most a fifth of the corpus: the rest trains
    held_out = frozenset(sample_weak_pairs(docs, min(WEAK_PAIRS, len(docs) // HELD_OUT_PART))[0])
    stages = Stages(output / "stages", console)
    adapted, model, pairs_file = output / "adapted", output / "model", output / "pairs.jsonl"
    adapting = opts.pretrain_minutes > 0
    start = str(adapted) if adapting else opts.model  # what fine-tuning starts from
    embeddings, index_dir = output / "embeddings", output / "index"

    def adapt() -> dict:
        from llara.training.pretrain.options import PretrainOptions
        from llara.training.pretrain.trainer import run_pretrain

        if not finished(adapted):
            resume = interrupted(adapted)  # a run killed mid-way left checkpoints beside its target
            options = PretrainOptions(
                output=adapted, resume=resume, save_every=SAVE_EVERY, max_time=opts.pretrain_minutes
            )
            run_pretrain(opts.model, corpus, options)
        return {"model": str(adapted)}

    def weak_pairs() -> dict:
        from llara.training.mining import pairs

        return asdict(pairs(corpus, pairs_file, hold_out=held_out))

    def fine_tune() -> dict:
        from llara.training.finetune.options import FinetuneOptions
        from llara.training.finetune.trainer import finetune

        record = {"model": str(model), "from": start, "steps": None}
        if not finished(model):
            options = FinetuneOptions(
                output=model, resume=interrupted(model), save_every=SAVE_EVERY, max_time=opts.finetune_minutes
            ).resolve()
            record["steps"] = finetune(start, pairs_file, options)["steps"]
        return record

    def encode() -> dict:
        from llara.inference.corpus import encode_corpus_file
        from llara.inference.encoder import LlaraEncoder

        encoder = LlaraEncoder.from_pretrained(model)
        manifest = encode_corpus_file(encoder, corpus, embeddings, resume=embeddings.exists())
        return {"embeddings": str(embeddings), "rows": manifest["rows"], "documents_read": manifest["documents_read"]}

    def index() -> dict:
        from llara.retrieval.index import build_index

        meta = build_index(embeddings, index_dir)
        return {"index": str(index_dir), "type": meta["index_type"], "count": meta["count"]}

    def check() -> dict:
        from llara.inference.encoder import LlaraEncoder
        from llara.retrieval.index import DenseIndex

        found = DenseIndex(index_dir)
        meta = found.meta
        encoder = LlaraEncoder.from_pretrained(
            model, recipe=meta["recipe"], passage_max_length=meta["passage_max_length"]
        )
        runs = measure_on_weak_pairs(
            docs, encoder, found.search, found.ids, n=len(held_out), long_documents=meta["long_documents"]
        )
        if runs is None:
            return {"weak_pairs": None}
        fusion = choose_fusion(runs)  # what `llara search`/`serve` --fusion auto use over this corpus
        record_fusion(model, docs, fusion, index_reading(meta))
        return {"weak_pairs": fusion.evidence, "fusion": fusion.describe(), "held_out_of_training": len(held_out)}

    done = {}
    if adapting:
        done["adapt"] = stages.run("adapt", f"EBAE + EBAR adaptation of {opts.model} on the corpus", adapt)
        tuned = "the adapted model"
    else:
        console.print(
            f"[dim]- adaptation: skipped (--pretrain-minutes 0, the default), fine-tuning starts from {start}; "
            "--pretrain-minutes 12 adapts it first[/]"
        )
        tuned = start
    done |= {
        "pairs": stages.run("pairs", f"weak pairs, the {len(held_out)} documents of the check held out", weak_pairs),
        "finetune": stages.run("finetune", f"contrastive fine-tuning of {tuned} on the weak pairs", fine_tune),
        "encode": stages.run("encode", "encode the corpus with the fine-tuned model", encode),
        "index": stages.run("index", "index the embeddings", index),
        "check": stages.run("check", "BM25, the model and the hybrid on the held-out weak pairs", check),
    }
    report = {
        "corpus": str(corpus),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "model": str(model),
        "index": str(index_dir),
        "index_type": done["index"]["type"],
        "pairs": {k: done["pairs"][k] for k in ("rows", "sources", "skipped", "held_out")},
        "finetuned_from": done["finetune"].get("from", str(adapted)),  # a stage record of an older llara lacks it
        "finetune_steps": done["finetune"]["steps"],
        "check": done["check"],
        "minutes": {name: stage["minutes"] for name, stage in done.items()},
    }
    write_json(output / "pipeline.json", report)
    return report
