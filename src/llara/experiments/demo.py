"""`llara demo`: the whole LLaRA pipeline on data that ships in pip packages, on a CPU budget.

Stages (each records its result in OUTPUT/stages/<name>.json; a rerun skips finished stages and
training resumes from its last checkpoint, so an interrupted demo picks up where it stopped):

  data -> BM25 -> raw model -> EBAE+EBAR adaptation -> evaluate -> weak pairs -> fine-tune -> evaluate

Data: 314 arXiv papers from the `cherche` package; queries are the titles, the relevant document is
the abstract. Neither training stage sees a title: adaptation reads the abstracts as plain text and
the weak pairs use one sentence of an abstract as the query for the rest of it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from llara.data.arxiv import write_arxiv_beir
from llara.data.beir import load_beir
from llara.data.io import atomic_write, write_json
from llara.reporting import markdown_table, metrics_table, results_plot
from llara.training.finetune.options import FinetuneOptions
from llara.training.options import interrupted
from llara.training.pretrain.options import PretrainOptions

log = logging.getLogger(__name__)
COLUMNS = ["nDCG@10", "R@100", "minutes"]
# The demo's overrides of FinetuneOptions' defaults, shared with `llara ablate` (llara.experiments.ablation) so
# both fine-tune alike: as the CISI run of benchmarks/RESULTS.md, one hard negative per query plus in-batch
# negatives, short texts, a high rate for a few CPU minutes. Adaptation takes PretrainOptions' defaults
# (`llara pretrain`'s, as measured in benchmarks/RESULTS.md: bag-of-words losses only, no LoRA dropout).
FINETUNE = {"group_size": 2, "query_max_length": 32, "passage_max_length": 128, "lr": 1e-3}
SAVE_EVERY = 25  # steps between checkpoints: an interrupted run loses little


@dataclass(frozen=True)
class Budget:
    """CPU minutes and sizes for one demo run."""

    pretrain_minutes: float
    finetune_minutes: float
    passage_max_length: int
    chunk_tokens: int
    batch_size: int


BUDGETS = {
    "full": Budget(pretrain_minutes=6.0, finetune_minutes=4.0, passage_max_length=256, chunk_tokens=128, batch_size=8),
    "quick": Budget(pretrain_minutes=1.5, finetune_minutes=1.0, passage_max_length=128, chunk_tokens=96, batch_size=8),
}


class Stages:
    """Run-once stages whose results persist as JSON, so an interrupted demo resumes."""

    def __init__(self, folder: Path, console: Console) -> None:
        self.folder, self.console = folder, console

    def run(self, name: str, title: str, fn) -> dict:
        path = self.folder / f"{name}.json"
        if path.is_file():
            self.console.print(f"[dim]- {title}: done earlier, reusing {path}[/]")
            return json.loads(path.read_text())
        self.console.print(f"[bold cyan]> {title}[/]")
        t = time.perf_counter()
        result = fn()
        result["minutes"] = (time.perf_counter() - t) / 60
        write_json(path, result)
        return result


def training_log(model_dir: Path) -> list[dict]:
    """The Trainer's log history of a finished run (from its last checkpoint)."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = model_dir.parent / f"{model_dir.name}-checkpoints"
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if last is None:
        return []
    state = json.loads((Path(last) / "trainer_state.json").read_text())
    return [e for e in state.get("log_history", []) if "loss" in e]


def run_demo(output: Path, quick: bool = False, model: str = "smollm2", budget: Budget | None = None) -> dict:
    from llara.evaluation import evaluate_bm25, evaluate_dense
    from llara.inference.encoder import LlaraEncoder
    from llara.training.finetune.trainer import finetune
    from llara.training.mining import pairs
    from llara.training.pretrain.trainer import run_pretrain

    budget = budget or BUDGETS["quick" if quick else "full"]
    console = Console()
    stages = Stages(output / "stages", console)
    data_dir = write_arxiv_beir(output / "data" / "arxiv")
    data = load_beir(data_dir)
    console.print(
        f"[bold]llara demo[/]: arXiv titles -> abstracts, {data.stats['documents']} papers, model {model}, "
        f"{'quick' if quick else 'full'} budget (adaptation {budget.pretrain_minutes} min, "
        f"fine-tuning {budget.finetune_minutes} min)"
    )

    def dense(model_path) -> dict:
        encoder = LlaraEncoder.from_pretrained(
            model_path, recipe="reference", passage_max_length=budget.passage_max_length
        )
        result = evaluate_dense(encoder, data)
        return {**result.metrics, **result.timings}

    def resumable(target: Path) -> dict:
        # A run killed mid-way left checkpoints beside `target`: continue it.
        return {"output": target, "resume": interrupted(target), "save_every": SAVE_EVERY, "logging_steps": 2}

    pretrained = output / "models" / "pretrained"
    finetuned = output / "models" / "finetuned"
    pairs_file = output / "data" / "weak-pairs.jsonl"

    def adapt() -> dict:
        opts = PretrainOptions(
            **resumable(pretrained),
            max_time=budget.pretrain_minutes,
            batch_size=budget.batch_size,
            chunk_tokens=budget.chunk_tokens,
        )
        run_pretrain(model, data_dir / "corpus.jsonl", opts)
        return {"model": str(pretrained)}

    def weak_pairs() -> dict:
        return vars(pairs(data_dir / "corpus.jsonl", pairs_file, query_mode="sentence", negatives=7))

    def fine_tune() -> dict:
        opts = FinetuneOptions(
            **resumable(finetuned),
            max_time=budget.finetune_minutes,
            batch_size=budget.batch_size,
            **{**FINETUNE, "passage_max_length": min(FINETUNE["passage_max_length"], budget.passage_max_length)},
        )
        finetune(str(pretrained), pairs_file, opts)
        return {"model": str(finetuned)}

    rows: dict[str, dict[str, float]] = {}
    rows["BM25"] = stages.run("bm25", "BM25", lambda: evaluate_bm25(data).metrics)
    rows[f"{model}, no adaptation"] = stages.run("raw", f"{model}, no adaptation", lambda: dense(model))
    t = stages.run("pretrain", "EBAE + EBAR adaptation on the abstracts", adapt)
    ev = stages.run("pretrain_eval", "evaluate the adapted model", lambda: dense(pretrained))
    rows["+ EBAE/EBAR adaptation"] = {**ev, "minutes": ev["minutes"] + t["minutes"]}
    p = stages.run("pairs", "weak pairs: a sentence of an abstract -> the rest, BM25 negatives", weak_pairs)
    t = stages.run("finetune", "contrastive fine-tuning on the weak pairs", fine_tune)
    ev = stages.run("finetune_eval", "evaluate the fine-tuned model", lambda: dense(finetuned))
    rows["+ fine-tuning on weak pairs"] = {**ev, "minutes": ev["minutes"] + t["minutes"] + p["minutes"]}

    write_json(output / "results.json", rows)
    with atomic_write(output / "results.md") as f:
        f.write(markdown_table(rows, COLUMNS))
    logs = {"adaptation": training_log(pretrained), "fine-tuning": training_log(finetuned)}
    results_plot(rows, logs, output / "results.png", "arXiv titles -> abstracts")
    Console().print(metrics_table("llara demo: arXiv titles -> abstracts", rows, COLUMNS))
    console.print(f"results: {output / 'results.md'}, {output / 'results.json'}, {output / 'results.png'}")
    return rows
