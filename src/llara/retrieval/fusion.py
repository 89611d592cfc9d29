"""Hybrid retrieval: fuse a BM25 run and a dense run into one.

Three methods, each per query over each run's top k:

- auto, the default: normalised score fusion (below) whose dense weight w is picked without labels on
  held-out weak pairs of the corpus itself (llara.calibration); w = 0 is BM25 alone, chosen where the
  dense side is clearly weaker.
- reciprocal rank fusion (Cormack et al., SIGIR 2009): score(d) = sum over runs of 1 / (k + rank(d)),
  rank counted from 1, a run that lacks d adding nothing. k = 60 as in the paper and fixed: nothing
  is tuned, so nothing can be tuned on test judgements. Equal weights unless --fusion-weight.
- normalised score fusion: each run's scores min-max normalised per query to [0, 1], then
  weight * dense + (1 - weight) * bm25, a document a run lacks counting 0 there. The weight is given
  (default 0.5) or picked on another split's judgements (llara.evaluation.tune_weight), never the
  evaluated one.

Written here with plain Python rather than ranx.fuse: on the tests' two runs, ranx 0.3.21 gives
the same RRF scores and the same min-max fusion (except that it maps a query's all-equal scores to
0, here 1), but it pulls numba, ir_datasets and fastparquet, takes 3-4 s to import and took ~50 s
to JIT-compile its first fusion (7 s with a warm cache) on a 2-core CPU.

Ranks follow the TREC file order (score descending, then document id), so fusing runs in memory
ranks as fusing their run.trec files would (the files keep scores exactly).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from llara.errors import LlaraError
from llara.retrieval.runs import Run

if TYPE_CHECKING:
    from llara.retrieval.index import DenseIndex

RRF_K = 60
FUSIONS = ("auto", "rrf", "score")
WEIGHT_GRID = tuple(i / 10 for i in range(11))  # dense weights tried by llara.evaluation.tune_weight


def ranked(scores: dict[str, float]) -> list[str]:
    """Document ids best first, ties by id: the order `write_trec_run` writes."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def top_k(run: Run, k: int) -> Run:
    return {q: {d: scores[d] for d in ranked(scores)[:k]} for q, scores in run.items()}


def reciprocal_rank_fusion(runs: list[Run], k: int = RRF_K, weights: list[float] | None = None) -> Run:
    """sum_r weight_r / (k + rank_r(d)) per query (weights 1 unless given); queries in any run are kept.
    A run of weight 0 adds nothing, so its documents alone rank after every document of the others."""
    weights = weights or [1.0] * len(runs)
    if len(runs) != len(weights):
        raise ValueError(f"{len(runs)} runs but {len(weights)} weights")
    fused: Run = {}
    for run, w in zip(runs, weights, strict=True):
        for qid, scores in run.items():
            out = fused.setdefault(qid, {})
            for rank, doc in enumerate(ranked(scores), start=1):
                out[doc] = out.get(doc, 0.0) + w / (k + rank)
    return fused


def min_max(scores: dict[str, float]) -> dict[str, float]:
    """Scores mapped to [0, 1] per query. All-equal scores (one hit, say) map to 1: each is the list's best."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return dict.fromkeys(scores, 1.0)
    return {d: (s - lo) / (hi - lo) for d, s in scores.items()}


def score_fusion(runs: list[Run], weights: list[float]) -> Run:
    """sum_r weight_r * min_max(run_r)(d) per query, a run lacking d contributing 0."""
    if len(runs) != len(weights):
        raise ValueError(f"{len(runs)} runs but {len(weights)} weights")
    fused: Run = {}
    for run, w in zip(runs, weights, strict=True):
        for qid, scores in run.items():
            out = fused.setdefault(qid, {})
            for doc, s in min_max(scores).items():
                out[doc] = out.get(doc, 0.0) + w * s
    return fused


@dataclass
class Fusion:
    """How `fuse` combines a BM25 and a dense run; recorded in metrics.json (`to_dict`)."""

    method: str = "auto"  # auto | rrf | score
    weight: float | None = None  # the dense run's weight (BM25 gets 1 - weight); rrf: None is equal weights
    tune_on: str | None = None  # score fusion: pick the weight on qrels/<tune_on>.tsv instead
    weight_source: str | None = None  # "default", "--fusion-weight", "tuned on qrels/<split>.tsv", "weak pairs"
    rrf_k: int = RRF_K
    evidence: dict | None = None  # auto: the weak-pair measurement that set the weight (llara.calibration)

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise LlaraError(f"unknown fusion {self.method!r}; choose one of {', '.join(FUSIONS)}")
        if self.weight is not None and not 0.0 <= self.weight <= 1.0:
            raise LlaraError(f"--fusion-weight must be between 0 and 1, got {self.weight}")
        if self.method != "score" and self.tune_on is not None:
            raise LlaraError("--tune-on picks a --fusion score weight on labels; --fusion auto picks one without")
        if self.method == "auto":
            if self.weight is not None and self.weight_source != "weak pairs":
                raise LlaraError("--fusion auto picks its weight on weak pairs; for your own weight use --fusion rrf")
            return
        if self.method == "rrf":
            if self.weight is not None and self.weight_source is None:
                self.weight_source = "--fusion-weight"
            return
        if self.weight is not None and self.tune_on is not None:
            raise LlaraError("give --fusion-weight or --tune-on, not both")
        if self.weight_source is None and self.tune_on is None:
            self.weight_source = "default" if self.weight is None else "--fusion-weight"
            self.weight = 0.5 if self.weight is None else self.weight

    def describe(self) -> str:
        if self.method == "score":
            return f"score fusion, dense weight {self.weight:g} ({self.weight_source})"
        if self.weight is None:
            return f"RRF (k={self.rrf_k})" if self.method == "rrf" else "auto fusion (weight not yet chosen)"
        if self.method == "auto" and self.evidence:
            e = self.evidence
            chosen = f"score fusion, dense weight {self.weight:g}" if self.weight else "BM25 alone"
            where = f" (recorded in {e['recorded_in']})" if e.get("recorded_in") else ""
            return (
                f"{chosen}: on {e['pairs']} held-out weak pairs of the corpus {e['metric']} was BM25 {e['bm25']:.3f}, "
                f"dense {e['dense']:.3f}, fused {e['weights'][f'{self.weight:g}']:.3f}{where}"
            )
        return f"weighted RRF (k={self.rrf_k}), dense weight {self.weight:g} ({self.weight_source})"

    def to_dict(self) -> dict:
        d = asdict(self)
        drop = ("rrf_k",) if self.method == "score" else ("tune_on",)
        if self.method == "auto":  # auto fuses scores: no k
            drop += ("rrf_k",)
        if self.method != "score" and self.weight is None:
            drop += ("weight_source",)
        for key in drop + (("evidence",) if self.evidence is None else ()):
            del d[key]
        return d


def fuse(bm25: Run, dense: Run, fusion: Fusion, k: int = 1000) -> Run:
    """The hybrid run: the two runs fused as `fusion` says, cut to the top k per query."""
    if fusion.method == "score" or (fusion.method == "auto" and fusion.weight is not None):
        fused = score_fusion([bm25, dense], [1.0 - fusion.weight, fusion.weight])
    elif fusion.weight is not None:
        fused = reciprocal_rank_fusion([bm25, dense], fusion.rrf_k, [1.0 - fusion.weight, fusion.weight])
    elif fusion.method == "auto":
        raise ValueError("--fusion auto: set the weight first (llara.calibration.choose_fusion)")
    else:
        fused = reciprocal_rank_fusion([bm25, dense], fusion.rrf_k)
    return top_k(fused, k)


def fusion_options(
    method: str, fusion: str | None = None, weight: float | None = None, tune_on: str | None = None
) -> Fusion | None:
    """The CLI's --fusion/--fusion-weight/--tune-on as a Fusion for --method hybrid (None otherwise),
    refusing them with any other method rather than ignoring them."""
    if method != "hybrid":
        if fusion is not None or weight is not None or tune_on is not None:
            raise LlaraError("--fusion, --fusion-weight and --tune-on only apply to --method hybrid")
        return None
    return Fusion(fusion or "auto", weight, tune_on)


def hybrid_search(
    queries: dict[str, str],
    corpus: dict[str, dict[str, str]],
    index: DenseIndex,
    encoder,
    fusion: Fusion,
    top_k: int = 1000,
    batch_size: int = 32,
    max_tokens_per_batch: int | None = None,
) -> Run:
    """`llara search --method hybrid`: BM25 over `corpus` and the dense `index` (llara.retrieval.index),
    each to depth top_k, fused."""
    from llara.retrieval.bm25 import BM25
    from llara.retrieval.index import dense_run

    sparse = BM25.run(corpus, queries, top_k)
    dense = dense_run(index, encoder, queries, top_k, batch_size, max_tokens_per_batch)
    return fuse(sparse, dense, fusion, top_k)
