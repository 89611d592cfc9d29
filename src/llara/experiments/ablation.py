"""`llara ablate`: does EBAE + EBAR adaptation before contrastive fine-tuning beat fine-tuning directly,
on the user's own corpus?

Arms, each evaluated on DIR's `--split` judgements (the only use of any judgements):

  BM25 | raw model, zero-shot | adapted model (EBAE + EBAR on DIR/corpus.jsonl), zero-shot |
  ft-raw: the raw model fine-tuned | ft-adapted: the adapted model fine-tuned

Both fine-tuned arms use the same training file, the same settings and, per seed, the same seed, so
the only difference between ft-raw-sN and ft-adapted-sN is the adaptation. Training rows are
`--train FILE`, else weak pairs built from the corpus alone (llara.training.mining.pairs): no judgements of
any split are used for training or to select anything.

Stages are resumable as the demo's (llara.experiments.demo.Stages): each records OUT/stages/<name>.json when it
finishes and is skipped on a rerun; an interrupted training run continues from its checkpoints.
Models live under OUT/models/, each evaluation under OUT/runs/<name>/ (run.trec, metrics.json,
per_query.json). The statistics are llara.comparison's: per seed, compare_runs(ft-adapted vs ft-raw),
and one compare_runs of every final run against BM25.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from llara import settings
from llara.comparison import DEFAULT_METRICS, TIE_TOLERANCE, compare_runs, parse_metrics
from llara.data.io import atomic_write, require_file, write_json
from llara.errors import LlaraError
from llara.experiments.demo import SAVE_EVERY, Stages
from llara.reporting import ablation_arms_table, ablation_markdown, ablation_seeds_table, comparison_table
from llara.settings import option
from llara.training.finetune.options import FinetuneOptions
from llara.training.options import interrupted
from llara.training.pretrain.options import PretrainOptions

ARMS = ("BM25", "raw", "adapted", "ft-raw", "ft-adapted")
PAIR_NEGATIVES = 7  # as the demo: BM25 negatives per weak pair (group_size 2 samples one per step)
# The settings of each training stage that ablation.json records (besides the budget and batch size).
ADAPTATION_SETTINGS = ("lr", "special_lr", "lm_loss", "lora_dropout", "chunk_tokens", "seed")
FINETUNE_SETTINGS = ("group_size", "query_max_length", "passage_max_length", "lr", "special_lr")


@dataclass(frozen=True)
class AblationOptions:
    """What `llara ablate` takes."""

    data: Path | None = option(
        None, "dataset folder in BEIR layout; its corpus.jsonl is the adaptation text", required=True
    )
    output: Path | None = option(
        None, "folder for models, runs, ablation.json and ablation.md (resumable)", required=True
    )
    model: str = settings.model()
    split: str = option("test", "qrels/<split>.tsv: evaluated only, never trained on")
    train: Path | None = option(None, 'JSONL rows {"query", "pos", "neg"} (default: weak pairs from the corpus)')
    seeds: int = option(3, "fine-tuning seeds (each: raw and adapted model alike)")
    pretrain_minutes: float = option(12.0, "adaptation budget in minutes")
    finetune_minutes: float = option(12.0, "budget of each fine-tuning run in minutes")
    pretrain_steps: int | None = option(None, "adaptation steps instead of minutes")
    finetune_steps: int | None = option(None, "fine-tuning steps instead of minutes")
    metrics: list[str] = settings.metrics(DEFAULT_METRICS, parse=parse_metrics)

    def validate(self) -> None:
        if self.seeds < 1:
            raise LlaraError(f"--seeds must be at least 1, got {self.seeds}")
        for name in ("pretrain_minutes", "finetune_minutes"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise LlaraError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("pretrain_steps", "finetune_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LlaraError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        canonical = parse_metrics(",".join(self.metrics))
        if list(self.metrics) != canonical:
            raise LlaraError(f"--metrics: write them as ir-measures does: {','.join(canonical)}")

    def budget(self, stage: str) -> dict:
        """max_steps / max_time of a training stage: the steps when given (reproducible), else the minutes."""
        steps = getattr(self, f"{stage}_steps")
        if steps:
            return {"max_steps": steps, "max_time": None}
        return {"max_steps": None, "max_time": getattr(self, f"{stage}_minutes")}

    def adaptation(self, target: Path, resume: bool = False) -> PretrainOptions:
        """The adaptation run: `llara pretrain`'s defaults (PretrainOptions) within this budget."""
        return PretrainOptions(output=target, resume=resume, save_every=SAVE_EVERY, **self.budget("pretrain"))

    def finetuning(self, target: Path, seed: int, resume: bool = False) -> FinetuneOptions:
        """A fine-tuning run: `llara finetune`'s defaults for this device within this budget."""
        budget = self.budget("finetune")
        opts = FinetuneOptions(output=target, resume=resume, save_every=SAVE_EVERY, seed=seed, **budget)
        return opts.resolve()


def query_mode(corpus: dict[str, dict[str, str]]) -> tuple[str, str]:
    """Weak-pair queries: titles when most documents have one, else a sentence of the text; and why."""
    titled = sum(1 for doc in corpus.values() if (doc.get("title") or "").strip())
    mode = "title" if titled * 2 > len(corpus) else "sentence"
    return mode, f"{titled} of {len(corpus)} documents have a title"


def spread(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof 1; None for a single value) of one metric over seeds."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "values": values,
    }


def run_ablation(data_dir: Path, output: Path, opts: AblationOptions, console: Console | None = None) -> dict:
    """Run (or resume) every stage, write OUT/ablation.json and OUT/ablation.md, print the tables."""
    from llara.data.beir import load_beir
    from llara.training.finetune.data import read_train_file

    console = console or Console()
    opts.validate()  # every input check happens before anything is written
    data = load_beir(data_dir, opts.split)
    corpus_file = data_dir / "corpus.jsonl"
    if opts.train is not None:
        read_train_file(require_file(opts.train, "training file"))
        training = {"source": "file", "file": str(opts.train)}
    else:
        mode, why = query_mode(data.corpus)
        training = {
            "source": "weak pairs from the corpus (llara.training.mining.pairs)",
            "query_mode": mode,
            "why": why,
        }
    console.print(
        f"[bold]llara ablate[/]: {escape(str(data_dir))} ({escape(opts.split)}: {data.stats['queries']} queries, "
        f"{data.stats['documents']} documents), model {escape(opts.model)}, {opts.seeds} seed(s)",
        highlight=False,
    )

    # Finished stages are reused as they are, so a rerun must ask for the same thing: refuse other
    # data, model, split, training rows or budgets (more --seeds or other --metrics are fine).
    settings = {
        "data": str(data_dir.resolve()),
        "model": opts.model,
        "split": opts.split,
        "train": str(opts.train.resolve()) if opts.train else None,
        "adaptation": opts.budget("pretrain"),
        "finetune": opts.budget("finetune"),
    }
    settings_file = output / "stages" / "settings.json"
    if settings_file.is_file():
        earlier = json.loads(settings_file.read_text())
        changed = [k for k in settings if earlier.get(k) != settings[k]]
        if changed:
            raise LlaraError(
                f"{output} holds an ablation with other {', '.join(changed)} ({settings_file}); "
                "use a new --output, or the same options to resume"
            )
    else:
        write_json(settings_file, settings)
    stages = Stages(output / "stages", console)
    runs_dir, models = output / "runs", output / "models"
    qrels = data_dir / "qrels" / f"{opts.split}.tsv"
    steps: dict[str, int | None] = {}

    def evaluate(name: str, title: str, model: str | Path | None) -> Path:
        """One evaluation stage: OUT/runs/<name>/{run.trec, metrics.json, per_query.json}."""

        def run() -> dict:
            from llara.evaluation import evaluate_bm25, evaluate_dense, write_evaluation

            info: dict = {"dataset": str(data_dir), "split": opts.split, **data.stats}
            if model is None:
                result, info["method"] = evaluate_bm25(data), "bm25"
            else:
                from llara.inference.encoder import LlaraEncoder

                encoder = LlaraEncoder.from_pretrained(model)  # the lengths the model was trained with
                result = evaluate_dense(encoder, data)
                info.update(method="dense", model=str(model), **encoder.config())
            folder = runs_dir / name
            write_evaluation(folder, result, info, tag=f"llara-{name}")
            return {**result.metrics, "run": str(folder / "run.trec")}

        stages.run(f"eval-{name}", title, run)
        return runs_dir / name / "run.trec"

    # --- the seedless arms
    final = {"bm25": evaluate("bm25", "BM25", None)}
    final["raw"] = evaluate("raw", f"{opts.model}, zero-shot", opts.model)
    adapted = models / "adapted"

    def finished(target: Path) -> bool:
        # Models are saved atomically (llara.training.save_final): a folder with llara.json is complete,
        # e.g. when a run was killed after saving but before its stage was recorded. Training it again
        # from its last checkpoint would overrun a --max-time budget.
        return (target / "llara.json").is_file()

    def adapt() -> dict:
        from llara.training.pretrain.trainer import run_pretrain

        if finished(adapted):
            return {"model": str(adapted)}
        # interrupted(): a run killed mid-way left checkpoints beside its target; it continues from them.
        run_pretrain(opts.model, corpus_file, opts.adaptation(adapted, resume=interrupted(adapted)))
        return {"model": str(adapted)}

    stages.run("adapt", f"EBAE + EBAR adaptation on {corpus_file} (no labels)", adapt)
    final["adapted"] = evaluate("adapted", "adapted model, zero-shot", adapted)

    # --- training rows: the user's file, else weak pairs from the corpus alone
    train_file = opts.train
    if train_file is None:
        from llara.training.mining import pairs

        train_file = output / "data" / "pairs.jsonl"
        mode = training["query_mode"]
        console.print(f"weak pairs: {mode} -> text queries ({training['why']})")
        summary = stages.run(
            "pairs",
            f"weak pairs ({mode} -> text, BM25 negatives)",
            # one query a document (min_rows=0): the ablation's figures were measured so
            lambda: vars(pairs(corpus_file, train_file, query_mode=mode, negatives=PAIR_NEGATIVES, min_rows=0)),
        )
        training.update(file=str(train_file), rows=summary["rows"])

    # --- per seed: the raw and the adapted model fine-tuned alike
    def fine_tune(name: str, base: str | Path, seed: int) -> None:
        from llara.training.finetune.trainer import finetune

        target = models / name

        def run() -> dict:
            if finished(target):
                return {"model": str(target), "steps": None, "train_loss": None}
            result = finetune(str(base), train_file, opts.finetuning(target, seed, resume=interrupted(target)))
            return {"model": str(target), "steps": result["steps"], "train_loss": result["train_loss"]}

        steps[name] = stages.run(f"finetune-{name}", f"fine-tune {name} (seed {seed})", run).get("steps")
        final[name] = evaluate(name, f"{name}, evaluated", target)

    for seed in range(1, opts.seeds + 1):
        fine_tune(f"ft-raw-s{seed}", opts.model, seed)
        fine_tune(f"ft-adapted-s{seed}", adapted, seed)

    report = summarize(final, qrels, opts, training, steps)
    report.update(data=str(data_dir), split=opts.split, model=opts.model, queries=data.stats["queries"])
    write_json(output / "ablation.json", report)
    with atomic_write(output / "ablation.md") as f:
        f.write(ablation_markdown(report))
    out = Console()
    out.print(ablation_arms_table(report))
    out.print(ablation_seeds_table(report))
    out.print(comparison_table(report["vs_bm25"]))
    console.print(f"wrote {output / 'ablation.json'} and {output / 'ablation.md'}")
    return report


def summarize(final: dict[str, Path], qrels: Path, opts: AblationOptions, training: dict, steps: dict) -> dict:
    """Per-arm mean/std over seeds, per-seed ft-adapted vs ft-raw tests, every final run vs BM25."""
    names = list(final)
    vs_bm25 = compare_runs([final[n] for n in names], qrels, opts.metrics, baseline=final["bm25"])
    means = {run["label"]: run["metrics"] for run in vs_bm25["runs"]}  # labels are the run folders' names
    seeds = range(1, opts.seeds + 1)
    members = {
        "BM25": ["bm25"],
        "raw": ["raw"],
        "adapted": ["adapted"],
        "ft-raw": [f"ft-raw-s{s}" for s in seeds],
        "ft-adapted": [f"ft-adapted-s{s}" for s in seeds],
    }
    arms = {
        arm: {"runs": runs, "metrics": {m: spread([means[r][m] for r in runs]) for m in opts.metrics}}
        for arm, runs in members.items()
    }
    per_seed = []
    for s in seeds:
        raw, adapted = final[f"ft-raw-s{s}"], final[f"ft-adapted-s{s}"]
        result = compare_runs([raw, adapted], qrels, opts.metrics, baseline=raw)
        per_seed.append(
            {
                "seed": s,
                "steps": {"ft-raw": steps.get(f"ft-raw-s{s}"), "ft-adapted": steps.get(f"ft-adapted-s{s}")},
                "metrics": {run["label"]: run["metrics"] for run in result["runs"]},
                "comparisons": result["comparisons"],
            }
        )
    effect = {}
    for m in opts.metrics:
        deltas = [next(c["delta"] for c in p["comparisons"] if c["metric"] == m) for p in per_seed]
        effect[m] = {
            "deltas": deltas,
            "mean_delta": statistics.fmean(deltas),
            "seeds_favouring_adaptation": sum(d > TIE_TOLERANCE for d in deltas),
            "seeds_against": sum(d < -TIE_TOLERANCE for d in deltas),
            "seeds_significant_for_adaptation": sum(
                c["significant"] and c["delta"] > 0 for p in per_seed for c in p["comparisons"] if c["metric"] == m
            ),
        }
    return {
        "metrics": list(opts.metrics),
        "seeds": opts.seeds,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "training": training,
        "settings": {
            "adaptation": _settings(opts.adaptation(Path()), ADAPTATION_SETTINGS),
            "finetune": {**_settings(opts.finetuning(Path(), 1), FINETUNE_SETTINGS), "seed": "1..seeds"},
        },
        "std": "sample standard deviation over seeds (ddof 1); null for a seedless arm or one seed",
        "arms": arms,
        "adaptation_effect": {
            "what": "per seed, ft-adapted vs ft-raw (baseline) with llara.comparison.compare_runs: paired "
            "randomization and t-tests over queries, Holm-corrected over the metrics",
            "per_seed": per_seed,
            "summary": effect,
        },
        "vs_bm25": vs_bm25,
    }


def _settings(run: PretrainOptions | FinetuneOptions, names: tuple[str, ...]) -> dict:
    return {**{k: getattr(run, k) for k in names}, "max_steps": run.max_steps, "max_time": run.max_time,
            "train_batch_size": run.train_batch_size}  # fmt: skip
