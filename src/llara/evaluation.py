"""The evaluation harness: retrieve for every judged query, score with ir-measures (pytrec_eval).

Metrics come from ir-measures through llara.scoring.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llara import settings
from llara.data.beir import BeirDataset
from llara.errors import LlaraError
from llara.retrieval.runs import Run
from llara.scoring import mean_scores, per_query_scores, score_run
from llara.settings import FusionMethod, LongDocuments, Method, Precision, option

if TYPE_CHECKING:
    from llara.retrieval.fusion import Fusion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateOptions:
    """What `llara evaluate` takes."""

    data: list[Path] = option(
        help="dataset folder in BEIR layout; repeat for a suite: each collection in turn, tested against BM25, "
        "and the macro average (OUTPUT/suite.json, suite.md)",
        factory=list,
        required=True,
    )
    output: Path | None = option(None, "folder for run.trec and metrics.json", required=True)
    model: str = settings.model()
    method: Method = option(Method.dense, "dense (the model), bm25, or hybrid (both fused)")
    split: str = option("test", "qrels/<split>.tsv")
    fusion: FusionMethod | None = settings.fusion()
    fusion_weight: float | None = settings.fusion_weight()
    tune_on: str | None = option(None, "--fusion score: pick the weight on qrels/<TUNE_ON>.tsv (e.g. dev), not --split")
    recipe: str | None = settings.recipe()
    top_k: int = settings.top_k()
    long_documents: LongDocuments = settings.long_documents()
    batch_size: int = settings.batch_size()
    max_tokens_per_batch: int | None = settings.max_tokens_per_batch()
    query_max_length: int | None = settings.query_max_length()
    passage_max_length: int | None = settings.passage_max_length()
    precision: Precision = settings.precision()
    trust_remote_code: bool = settings.trust_remote_code()


@dataclass
class Evaluation:
    run: Run
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)  # OUT/per_query.json, for `llara compare`
    info: dict = field(default_factory=dict)  # method-specific settings for metrics.json (hybrid: fusion)
    fusion: Fusion | None = None  # a hybrid's fusion as it ran (its weight chosen)
    components: dict[str, Run] = field(default_factory=dict)  # a hybrid's BM25 and dense runs, before fusion


def _scored(run: Run, qrels: dict[str, dict[str, int]], timings: dict[str, float]) -> Evaluation:
    per_query = per_query_scores(run, qrels)
    return Evaluation(run, mean_scores(per_query), timings, per_query)


def evaluate_bm25(data: BeirDataset, k: int = 1000) -> Evaluation:
    from llara.retrieval.bm25 import BM25

    t0 = time.perf_counter()
    run = BM25.run(data.corpus, data.queries, k)
    return _scored(run, data.qrels, {"search_s": time.perf_counter() - t0})


def evaluate_dense(
    encoder,
    data: BeirDataset,
    k: int = 1000,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    max_tokens_per_batch: int | None = None,
    long_documents: str = "split",
) -> Evaluation:
    """Encode corpus (long documents split into passages, or truncated) and queries, exact inner-product
    FAISS search (a document by its best passage), score the top k."""
    from llara.retrieval.dense import exact_search

    run, timings, encoded = exact_search(
        encoder, data.corpus, data.queries, k, batch_size, show_progress_bar, max_tokens_per_batch, long_documents
    )
    result = _scored(run, data.qrels, timings)
    result.info = {"documents_read": encoded.documents}
    return result


def tuning_split(data: BeirDataset, fusion: Fusion) -> BeirDataset | None:
    """The split whose judgements pick the fusion weight (`--tune-on`), refused if it is the evaluated one."""
    from llara.data.beir import load_split

    if fusion.tune_on is None:
        return None
    if fusion.tune_on == data.split:
        raise LlaraError(
            f"--tune-on {fusion.tune_on} is the evaluated split: tune on another (dev or train), never on test "
            "judgements"
        )
    return load_split(data, fusion.tune_on)


def evaluate_hybrid(
    encoder,
    data: BeirDataset,
    fusion: Fusion,
    k: int = 1000,
    tune: BeirDataset | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = True,
    max_tokens_per_batch: int | None = None,
    long_documents: str = "split",
) -> Evaluation:
    """BM25 and dense runs fused (llara.retrieval.fusion.Fusion). `--fusion auto` picks its weight on
    held-out weak pairs of the corpus (llara.calibration), no judgements read. With `tune` (another
    split of the same dataset) the score-fusion weight is picked on its judgements, never on `data`'s.
    The chosen weight is set on `fusion`."""
    from dataclasses import replace

    from llara.calibration import choose_fusion, measure_on_weak_pairs
    from llara.retrieval.dense import exact_search
    from llara.retrieval.fusion import fuse

    if (tune is None) != (fusion.tune_on is None) or (tune is not None and tune.split == data.split):
        raise ValueError("pass tune=tuning_split(data, fusion)")

    # one BM25 index and one corpus encoding serve the evaluated and the tuning queries alike
    pool = replace(data, queries={**data.queries, **(tune.queries if tune else {})})
    sparse = evaluate_bm25(pool, k)
    dense_run, dense_timings, encoded = exact_search(
        encoder, pool.corpus, pool.queries, k, batch_size, show_progress_bar, max_tokens_per_batch, long_documents
    )

    def only(run: Run, queries: dict[str, str]) -> Run:
        return {q: run.get(q, {}) for q in queries}

    info: dict = {}
    t0 = time.perf_counter()
    fusion = copy.copy(fusion)  # resolved here (weight, its source); the caller's stays as given
    if fusion.method == "auto":
        weak = measure_on_weak_pairs(
            data.corpus,
            encoder,
            encoded.search,
            encoded.doc_ids,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            long_documents=long_documents,
        )
        fusion = choose_fusion(weak)
    if tune is not None:
        tune_bm25, tune_dense = only(sparse.run, tune.queries), only(dense_run, tune.queries)
        fusion.weight, grid = tune_weight(tune_bm25, tune_dense, tune.qrels, k=k)
        fusion.weight_source = f"tuned on qrels/{tune.split}.tsv"
        info["tuning"] = {
            "split": tune.split,
            "metric": "nDCG@10",
            "queries": len(tune.queries),
            # a query judged in both splits (e.g. a test split holding every query) is worth knowing about
            "queries_also_evaluated": len(set(tune.queries) & set(data.queries)),
            "grid": grid,
        }
        if info["tuning"]["queries_also_evaluated"]:
            log.warning(
                "%d of the %d evaluated queries are also judged in qrels/%s.tsv, which picked the weight",
                info["tuning"]["queries_also_evaluated"],
                len(data.queries),
                tune.split,
            )
    choose_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fused = {"bm25": only(sparse.run, data.queries), "dense": only(dense_run, data.queries)}
    run = fuse(fused["bm25"], fused["dense"], fusion, k)
    timings = {f"bm25_{n}": v for n, v in sparse.timings.items()} | dense_timings
    result = _scored(run, data.qrels, timings | {"choose_fusion_s": choose_s, "fuse_s": time.perf_counter() - t0})
    # the components' own figures on the evaluated split, so one hybrid run shows all three
    components = {"bm25": score_run(sparse.run, data.qrels), "dense": score_run(dense_run, data.qrels)}
    result.info = {
        "fusion": {**fusion.to_dict(), **info, "components": components},
        "documents_read": encoded.documents,
    }
    result.fusion = fusion
    result.components = fused
    return result


def tune_weight(
    bm25: Run,
    dense: Run,
    qrels: dict[str, dict[str, int]],
    metric: str = "nDCG@10",
    grid: tuple[float, ...] | None = None,
    k: int = 1000,
) -> tuple[float, dict[str, float]]:
    """The dense weight of score fusion with the best mean `metric` on `qrels` (which must not be the
    evaluated split's); ties go to the weight nearest 0.5. Returns (weight, {weight: metric})."""
    from llara.retrieval.fusion import WEIGHT_GRID, Fusion, fuse

    grid = grid or WEIGHT_GRID
    found = {}
    for w in grid:
        run = fuse(bm25, dense, Fusion("score", w), k)
        found[w] = score_run(run, qrels, (metric,))[metric]
    best = min(grid, key=lambda w: (-found[w], abs(w - 0.5)))
    return best, {f"{w:g}": v for w, v in found.items()}


def write_evaluation(folder: Path, result: Evaluation, info: dict, tag: str) -> None:
    """FOLDER/run.trec, FOLDER/per_query.json (what `llara compare` reads) and FOLDER/metrics.json (the means,
    and under "info": `info`, the method's own settings and the timings)."""
    from llara.data.io import write_json
    from llara.retrieval.runs import write_trec_run

    write_trec_run(folder / "run.trec", result.run, tag=tag)
    write_json(folder / "per_query.json", result.per_query)
    write_json(folder / "metrics.json", {**result.metrics, "info": {**info, **result.info, **result.timings}})
