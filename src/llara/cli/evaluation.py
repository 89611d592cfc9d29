"""`llara evaluate`, `llara compare`, `llara ablate`, `llara demo`: how good is a retriever, and is it better."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from llara.cli.options import command, console
from llara.comparison import CompareOptions
from llara.errors import LlaraError
from llara.evaluation import EvaluateOptions
from llara.experiments.ablation import AblationOptions
from llara.experiments.demo import DemoOptions
from llara.settings import Method


def _evaluate(o: EvaluateOptions) -> None:
    """Retrieve for every judged query of a BEIR dataset (or of several) and score the runs with ir-measures."""
    from llara.retrieval.fusion import fusion_options

    method, model, fusion, fusion_weight, tune_on = o.method, o.model, o.fusion, o.fusion_weight, o.tune_on
    fusion_options(method.value, fusion and fusion.value, fusion_weight, tune_on)  # refused before anything runs
    encoder = None

    def load_encoder():
        nonlocal encoder
        if encoder is None:  # once, for every collection
            from llara.inference.encoder import LlaraEncoder

            encoder = LlaraEncoder.from_pretrained(
                model,
                recipe=o.recipe,
                query_max_length=o.query_max_length,
                passage_max_length=o.passage_max_length,
                precision=o.precision,
                trust_remote_code=o.trust_remote_code,
            )
        return encoder

    def run(folder: Path, how: Method, out: Path) -> dict:
        """One collection, one method: OUT/run.trec, metrics.json, per_query.json; returns metrics and stats."""
        from llara.data.beir import load_beir
        from llara.data.io import bad_rows
        from llara.evaluation import evaluate_bm25, evaluate_dense, evaluate_hybrid, tuning_split, write_evaluation
        from llara.reporting import metrics_table

        fuse = fusion_options(how.value, fusion and fusion.value, fusion_weight, tune_on) if how is method else None
        dataset = load_beir(folder, o.split)  # all validation happens before anything is written
        tune = tuning_split(dataset, fuse) if fuse else None
        info = {"method": how.value, "dataset": str(folder), "split": o.split, **dataset.stats}
        if how is Method.bm25:
            result = evaluate_bm25(dataset, k=o.top_k)
            name = "bm25"
        else:
            enc = load_encoder()
            texts, cut = enc.prompts.wrapped_by_side["query"], enc.prompts.truncated_by_side["query"]
            batching = {"batch_size": o.batch_size, "max_tokens_per_batch": o.max_tokens_per_batch}
            if fuse:
                result = evaluate_hybrid(enc, dataset, fuse, o.top_k, tune, long_documents=o.long_documents, **batching)
            else:
                result = evaluate_dense(enc, dataset, k=o.top_k, long_documents=o.long_documents, **batching)
            name = f"{model} ({enc.recipe.name})" + (" + bm25" if fuse else "")
            if fuse:
                console.print(f"fusion: {result.fusion.describe()}", soft_wrap=True)
            info.update(model=str(model), **enc.config(), precision=o.precision)
            queries_cut = enc.prompts.truncated_by_side["query"] - cut
            info.update(queries_encoded=enc.prompts.wrapped_by_side["query"] - texts, truncated_queries=queries_cut)
            if queries_cut:
                console.print(f"truncated {queries_cut} queries to fit --query-max-length")
        info["skipped_rows"] = bad_rows().count
        info["warnings"] = bad_rows().warnings()
        write_evaluation(out, result, info, tag=f"llara-{how.value}")
        Console().print(metrics_table(f"{folder.name} ({o.split})", {name: result.metrics}, list(result.metrics)))
        console.print(f"wrote {out / 'run.trec'}, {out / 'metrics.json'} and {out / 'per_query.json'}")
        return {"metrics": result.metrics, "stats": dataset.stats, "qrels": folder / "qrels" / f"{o.split}.tsv"}

    if len(o.data) == 1:
        run(o.data[0], method, o.output)
        return
    evaluate_suite(o.data, o.output, method, run, model if method is not Method.bm25 else None, o.split)


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


def _compare(o: CompareOptions) -> None:
    """Compare runs with a baseline: metrics, differences, paired randomization and t-tests (Holm-corrected)."""
    from llara.comparison import compare_runs
    from llara.data.io import write_json
    from llara.reporting import comparison_table

    result = compare_runs(o.runs, o.qrels, o.metrics, o.baseline, o.permutations, o.seed, o.alpha)
    if o.output is not None:
        write_json(o.output, result)
    Console().print(comparison_table(result))
    if o.output is not None:
        console.print(f"wrote {o.output}")


def _ablate(o: AblationOptions) -> None:
    """Does EBAE + EBAR adaptation before fine-tuning beat fine-tuning directly? All arms on your data, with tests."""
    from llara.experiments.ablation import run_ablation

    run_ablation(o.data, o.output, o, console)


def _demo(o: DemoOptions) -> None:
    """The whole pipeline on data that ships with pip packages (arXiv titles -> abstracts)."""
    from llara.experiments.demo import run_demo

    run_demo(o.output, quick=o.quick, model=o.model)


evaluate = command(EvaluateOptions, _evaluate, "evaluate")
compare = command(CompareOptions, _compare, "compare")
ablate = command(AblationOptions, _ablate, "ablate")
demo = command(DemoOptions, _demo, "demo")
