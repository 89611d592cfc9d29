"""`llara demo`: the whole LLaRA pipeline on data that ships in pip packages, on a CPU budget, and the
paper's question asked of it: does EBAE + EBAR adaptation before fine-tuning beat fine-tuning directly,
and does any of it beat BM25?

Rows of the table (printed, and in OUTPUT/results.md, results.json and results.png):

  BM25 | the raw model | adapted (EBAE + EBAR) | fine-tuned, no adaptation | adapted + fine-tuned |
  hybrid: BM25 and adapted + fine-tuned fused as `llara evaluate --method hybrid` fuses by default:
  score fusion, the dense weight chosen on held-out weak pairs of the abstracts (no judgements read)

Both fine-tuned rows train on the same weak pairs with the same options (`finetune_options`) and the
same budget, so the adaptation is the only difference between them. Every row but BM25 is tested
against BM25 with llara.comparison.compare_runs, on each metric of the table: the mean difference,
two-sided paired randomization and t-tests over the queries, Holm-corrected over rows x metrics, and
wins/ties/losses over queries.

Stages (each records its result in OUTPUT/stages/<name>.json; a rerun skips finished stages and
training resumes from its last checkpoint, so an interrupted demo picks up where it stopped):

  data -> BM25 -> raw model -> adaptation -> evaluate -> weak pairs -> fine-tune the raw model
       -> evaluate -> fine-tune the adapted model -> evaluate -> the hybrid's weight

Each evaluation keeps its run in OUTPUT/runs/<name>/ (run.trec, per_query.json, metrics.json), which
a resumed demo reads back: the hybrid run (OUTPUT/runs/hybrid/) and the tests are derived from those
files on every run, in seconds and deterministically (fixed seed), so they always match them.

Data: 314 arXiv papers from the `cherche` package; queries are the titles, the relevant document is
the abstract. Neither training stage sees a title: adaptation reads the abstracts as plain text and
the weak pairs use one sentence of an abstract as the query for the rest of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.console import Console

from llara import settings
from llara.data.arxiv import write_arxiv_beir
from llara.data.beir import load_beir
from llara.data.io import atomic_write, write_json
from llara.reporting import demo_markdown, demo_table, results_plot
from llara.retrieval.fusion import Fusion
from llara.settings import DEFAULT_MODEL, option
from llara.training.finetune.options import FinetuneOptions
from llara.training.options import interrupted
from llara.training.pretrain.options import PretrainOptions

log = logging.getLogger(__name__)
TITLE = "arXiv titles -> abstracts"
COLUMNS = ["nDCG@10", "R@100", "minutes"]
SIGNIFICANCE_METRICS = ("nDCG@10", "R@100")  # the table's metrics, each row tested against BM25 on each
# Both training stages take the commands' defaults: adaptation PretrainOptions' (`llara pretrain`'s),
# fine-tuning FinetuneOptions' profile for the device (`llara finetune`'s; on a CPU one hard negative
# per query, short texts, a high rate), within the budget's minutes.
SAVE_EVERY = 25  # steps between checkpoints: an interrupted run loses little
# What results.json records of the fine-tuning options (identical for both fine-tuned rows).
FINETUNE_RECORD = (
    "group_size", "query_max_length", "passage_max_length", "lr", "special_lr", "train_batch_size", "seed"
)  # fmt: skip
# Evaluation stage (OUTPUT/stages/<name>.json) of each run (OUTPUT/runs/<name>/).
EVAL_STAGES = {
    "bm25": "bm25",
    "raw": "raw",
    "adapted": "pretrain_eval",
    "ft-raw": "finetune_raw_eval",
    "ft-adapted": "finetune_eval",
}
MINUTES = (
    "the time to produce the row: its training stages (adaptation, weak pairs, fine-tuning) and its "
    "evaluation; the hybrid adds BM25's, the choice of its weight and the fusion"
)


@dataclass(frozen=True)
class Budget:
    """CPU minutes and sizes for one demo run."""

    pretrain_minutes: float
    finetune_minutes: float  # each of the two fine-tuning runs (raw and adapted) gets this much
    passage_max_length: int
    chunk_tokens: int
    batch_size: int


BUDGETS = {
    "full": Budget(pretrain_minutes=6.0, finetune_minutes=4.0, passage_max_length=256, chunk_tokens=128, batch_size=8),
    "quick": Budget(pretrain_minutes=1.5, finetune_minutes=1.0, passage_max_length=128, chunk_tokens=96, batch_size=8),
}


def row_names(model: str) -> dict[str, str]:
    """Run (OUTPUT/runs/<name>/) -> its row in the table, in the table's order."""
    return {
        "bm25": "BM25",
        "raw": f"{model}, raw",
        "adapted": "adapted (EBAE + EBAR)",
        "ft-raw": "fine-tuned, no adaptation",
        "ft-adapted": "adapted + fine-tuned",
        "hybrid": "hybrid: BM25 + adapted + fine-tuned",
    }


def finetune_options(budget: Budget, output: Path, resume: bool = False) -> FinetuneOptions:
    """The fine-tuning options of both fine-tuned rows: `llara finetune`'s defaults for this device,
    passages no longer than the budget's, for the budget's minutes; only the output folder differs."""
    opts = FinetuneOptions(
        output=output,
        resume=resume,
        save_every=SAVE_EVERY,
        logging_steps=2,
        max_time=budget.finetune_minutes,
        train_batch_size=budget.batch_size,
    ).resolve()
    return replace(opts, passage_max_length=min(opts.passage_max_length, budget.passage_max_length))


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


def finished(target: Path) -> bool:
    """A saved model (saved atomically: llara.json is written last), e.g. by a run killed before its stage
    was recorded; training it again from its last checkpoint would overrun the budget."""
    return (target / "llara.json").is_file()


@dataclass(frozen=True)
class DemoOptions:
    """What `llara demo` takes."""

    output: Path = option(Path("llara-demo"), "folder for data, models and results")
    quick: bool = option(False, "a smaller, faster run")
    model: str = settings.model()


def run_demo(output: Path, quick: bool = False, model: str = DEFAULT_MODEL, budget: Budget | None = None) -> dict:
    """Run (or resume) every stage, write OUTPUT/results.{json,md,png}, print the table; returns
    what results.json holds."""
    from llara.comparison import compare_runs
    from llara.evaluation import (
        Evaluation,
        evaluate_bm25,
        evaluate_dense,
        mean_scores,
        per_query_scores,
        write_evaluation,
    )
    from llara.inference.encoder import LlaraEncoder
    from llara.retrieval.fusion import fuse
    from llara.retrieval.runs import read_trec_run
    from llara.training.finetune.trainer import finetune
    from llara.training.mining import pairs
    from llara.training.pretrain.trainer import run_pretrain

    budget_name = "custom" if budget is not None else "quick" if quick else "full"
    budget = budget or BUDGETS[budget_name]
    console = Console()
    stages = Stages(output / "stages", console)
    data_dir = write_arxiv_beir(output / "data" / "arxiv")
    data = load_beir(data_dir)
    console.print(
        f"[bold]llara demo[/]: {TITLE}, {data.stats['documents']} papers, model {model}, {budget_name} budget "
        f"(adaptation {budget.pretrain_minutes} min, fine-tuning {budget.finetune_minutes} min for each of "
        "the raw and the adapted model)"
    )
    runs_dir = output / "runs"
    info = {"dataset": str(data_dir), "split": data.split, **data.stats}

    def evaluation(name: str, title: str, evaluate: Callable[[], tuple[Evaluation, dict]]) -> dict:
        """One evaluation stage: OUTPUT/runs/<name>/ (read back by a resumed demo) and its stage record."""
        folder = runs_dir / name
        if not (folder / "run.trec").is_file():  # e.g. a demo of an earlier llara, which kept only metrics
            (stages.folder / f"{EVAL_STAGES[name]}.json").unlink(missing_ok=True)

        def run() -> dict:
            result, method = evaluate()
            write_evaluation(folder, result, {**info, **method}, tag=f"llara-demo-{name}")
            return {"metrics": result.metrics, "timings": result.timings, "run": f"runs/{name}/run.trec"}

        return stages.run(EVAL_STAGES[name], title, run)

    def encoder_for(model_path: str | Path) -> LlaraEncoder:
        length = budget.passage_max_length
        return LlaraEncoder.from_pretrained(model_path, recipe="reference", passage_max_length=length)

    def dense(model_path: str | Path) -> tuple[Evaluation, dict]:
        encoder = encoder_for(model_path)
        return evaluate_dense(encoder, data), {"method": "dense", "model": str(model_path), **encoder.config()}

    pretrained = output / "models" / "pretrained"
    finetuned_raw = output / "models" / "finetuned-raw"
    finetuned = output / "models" / "finetuned"
    pairs_file = output / "data" / "weak-pairs.jsonl"

    def adapt() -> dict:
        if not finished(pretrained):
            opts = PretrainOptions(
                output=pretrained,
                resume=interrupted(pretrained),  # a run killed mid-way left checkpoints beside its target
                save_every=SAVE_EVERY,
                logging_steps=2,
                max_time=budget.pretrain_minutes,
                train_batch_size=budget.batch_size,
                chunk_tokens=budget.chunk_tokens,
            )
            run_pretrain(model, data_dir / "corpus.jsonl", opts)
        return {"model": str(pretrained)}

    def weak_pairs() -> dict:
        # one query a document (min_rows=0), as the demo's figures in benchmarks/RESULTS.md were measured
        return vars(pairs(data_dir / "corpus.jsonl", pairs_file, query_mode="sentence", negatives=7, min_rows=0))

    def fine_tune(base: str | Path, target: Path) -> Callable[[], dict]:
        def run() -> dict:
            record = {"model": str(target), "base_model": str(base), "steps": None, "train_loss": None}
            if not finished(target):
                result = finetune(str(base), pairs_file, finetune_options(budget, target, interrupted(target)))
                record.update(steps=result["steps"], train_loss=result["train_loss"])
            return record

        return run

    names = row_names(model)
    ev = {"bm25": evaluation("bm25", "BM25", lambda: (evaluate_bm25(data), {"method": "bm25"}))}
    ev["raw"] = evaluation("raw", f"{model}, raw (no adaptation, no fine-tuning)", lambda: dense(model))
    adapted = stages.run("pretrain", "EBAE + EBAR adaptation on the abstracts", adapt)
    ev["adapted"] = evaluation("adapted", "evaluate the adapted model", lambda: dense(pretrained))
    weak = stages.run("pairs", "weak pairs: a sentence of an abstract -> the rest, BM25 negatives", weak_pairs)
    ft_raw = stages.run(
        "finetune_raw", "contrastive fine-tuning of the raw model on the weak pairs", fine_tune(model, finetuned_raw)
    )
    ev["ft-raw"] = evaluation("ft-raw", "evaluate the raw + fine-tuned model", lambda: dense(finetuned_raw))
    ft = stages.run(
        "finetune", "contrastive fine-tuning of the adapted model on the same pairs", fine_tune(pretrained, finetuned)
    )
    ev["ft-adapted"] = evaluation("ft-adapted", "evaluate the adapted + fine-tuned model", lambda: dense(finetuned))

    def hybrid_weight() -> dict:
        from llara.calibration import choose_fusion, measure_on_weak_pairs
        from llara.retrieval.dense import index_corpus

        encoder = encoder_for(finetuned)
        docs = index_corpus(encoder, data.corpus)  # as the dense rows read it: long documents split
        return choose_fusion(measure_on_weak_pairs(data.corpus, encoder, docs.search, docs.doc_ids)).to_dict()

    chosen = stages.run("hybrid_weight", "the hybrid's dense weight, chosen on held-out weak pairs", hybrid_weight)
    # The hybrid: the two runs as written (a resumed demo fuses what it reads back, as a fresh one).
    t = time.perf_counter()
    fusion = Fusion(**{k: v for k, v in chosen.items() if k != "minutes"})
    console.print(f"hybrid: {fusion.describe()}", soft_wrap=True)
    fused = fuse(*(read_trec_run(runs_dir / n / "run.trec") for n in ("bm25", "ft-adapted")), fusion)
    per_query = per_query_scores(fused, data.qrels)
    hybrid = Evaluation(fused, mean_scores(per_query), {"fuse_s": time.perf_counter() - t}, per_query)
    hybrid.info = {"fusion": {**fusion.to_dict(), "runs": ["runs/bm25/run.trec", "runs/ft-adapted/run.trec"]}}
    write_evaluation(runs_dir / "hybrid", hybrid, {**info, "method": "hybrid"}, tag="llara-demo-hybrid")
    ev["hybrid"] = {"metrics": hybrid.metrics, "minutes": chosen["minutes"] + (time.perf_counter() - t) / 60}

    minutes = {
        "bm25": ev["bm25"]["minutes"],
        "raw": ev["raw"]["minutes"],
        "adapted": adapted["minutes"] + ev["adapted"]["minutes"],
        "ft-raw": weak["minutes"] + ft_raw["minutes"] + ev["ft-raw"]["minutes"],
        "ft-adapted": adapted["minutes"] + weak["minutes"] + ft["minutes"] + ev["ft-adapted"]["minutes"],
    }
    minutes["hybrid"] = minutes["bm25"] + minutes["ft-adapted"] + ev["hybrid"]["minutes"]

    # Every row against BM25, from the run files: paired tests over the queries, Holm over rows x metrics.
    runs = [runs_dir / n / "run.trec" for n in names]
    vs = compare_runs(runs, data_dir / "qrels" / f"{data.split}.tsv", SIGNIFICANCE_METRICS, baseline=runs[0])
    rows = {}
    for name, label in names.items():
        rows[label] = {"run": f"runs/{name}/run.trec", "metrics": ev[name]["metrics"], "minutes": minutes[name]}
        if name in ("ft-raw", "ft-adapted"):
            rows[label]["steps"] = (ft_raw if name == "ft-raw" else ft).get("steps")
        comparisons = [c for c in vs["comparisons"] if c["run"] == name]
        rows[label]["vs_bm25"] = (
            {c["metric"]: {k: v for k, v in c.items() if k not in ("run", "metric")} for c in comparisons}
            if name != "bm25"
            else None
        )
    finetuning = finetune_options(budget, finetuned)
    report = {
        "data": TITLE,
        "model": model,
        "queries": vs["queries"],
        "budget": {"name": budget_name, **asdict(budget)},
        "finetune": {
            "rows": [names["ft-raw"], names["ft-adapted"]],
            "what": "the same weak pairs, options and budget for both; with a time budget the step counts may differ",
            "pairs": str(pairs_file),
            "max_time": finetuning.max_time,
            **{k: getattr(finetuning, k) for k in FINETUNE_RECORD},
        },
        "hybrid": {**fusion.to_dict(), "of": [names["bm25"], names["ft-adapted"]]},
        "columns": COLUMNS,
        "minutes": MINUTES,
        "rows": rows,
        "significance": {k: v for k, v in vs.items() if k not in ("runs", "comparisons")},
    }

    write_json(output / "results.json", report)
    with atomic_write(output / "results.md") as f:
        f.write(demo_markdown(report))
    logs = {
        "adaptation": training_log(pretrained),
        "fine-tuning, no adaptation": training_log(finetuned_raw),
        "fine-tuning after adaptation": training_log(finetuned),
    }
    metric = SIGNIFICANCE_METRICS[0]
    results_plot(
        {label: r["metrics"] for label, r in rows.items()},
        logs,
        output / "results.png",
        TITLE,
        versus={label: (r["vs_bm25"] or {}).get(metric) for label, r in rows.items()},
        alpha=vs["alpha"],
    )
    Console().print(demo_table(report))
    console.print(f"results: {output / 'results.md'}, {output / 'results.json'}, {output / 'results.png'}")
    return report
