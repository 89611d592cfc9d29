"""How far to trust the dense side of a hybrid, measured without labels (`--fusion auto`).

Equal-weight fusion with a dense model far below BM25 drags the hybrid below BM25 alone. So before
fusing, both sides are measured on held-out weak pairs of the corpus itself: for a sample of
documents, a query made from the document (its title, else one sentence, else a few words, as
`llara pairs` makes them: llara.data.weak_pairs) whose one relevant document is the rest of that
document. In the searched collection the sampled documents are replaced by their rest, for BM25 and
the dense model alike (a query copied out of an unchanged document would be found by word matching
alone). On these pairs BM25, the dense model and min-max score fusion at each dense weight of `WEIGHTS`
are scored (nDCG@10, ir-measures), and the weight that fuses best is the hybrid's; ties go to the
smaller weight. Weight 0 is BM25 alone: what the hybrid becomes where the dense side is clearly weaker.

Chosen among the rules compared on the development suite (benchmarks/bench_fusion_suite.py and
bench_fusion_rules.py; every rule and setting in benchmarks/RESULTS.md): it has no setting of its own to
tune, it was never significantly worse than BM25 there (equal-weight RRF was, in 6 of 10 collection x
model cases), and it beat the same choice made for weighted RRF wherever the two differed (macro 1.05x
against 1.03x BM25). It is not the best possible: weak pairs favour BM25 (a query cut out of a document
shares its words with the rest), so where the dense model is level with BM25 on real queries the weight
chosen can be lower than the best one.

`llara pipeline` records its choice in the fine-tuned model's llara.json (`record_fusion`), keyed by the
corpus and how the index reads it; `llara search` and `llara serve` over that corpus then use it
(`fusion_for_index`) instead of measuring again.

The pairs are drawn with their own seed, so where a document has several sentences the query is
usually not the one `llara pairs` trained on; a model fine-tuned on the same corpus has still seen
these documents, which flatters the dense side (`llara pipeline` holds them out of training).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from llara.data.beir import format_document
from llara.data.weak_pairs import make_pair
from llara.retrieval.fusion import WEIGHT_GRID, Fusion, fuse
from llara.retrieval.runs import Run
from llara.scoring import mean_scores, per_query_scores

log = logging.getLogger(__name__)

WEAK_PAIRS = 300  # documents sampled; a few seconds of encoding, enough to tell 0.05 of nDCG@10 apart
SEED = 1234  # not `llara pairs`' 42: other sentences than training's where a document has several
WEIGHTS = WEIGHT_GRID  # the dense weights tune_weight tries, here for score fusion on the weak pairs
METRIC = "nDCG@10"
DEPTH = 100  # each side's top k on the weak pairs: enough for nDCG@10 of the fused list

# (query embeddings, k) -> (scores, rows) over the corpus in `doc_ids` order: a FAISS search
DenseSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class WeakPairRuns:
    """BM25's and the dense model's runs of the held-out weak pairs, and their judgements."""

    bm25: Run
    dense: Run
    qrels: dict[str, dict[str, int]]  # each pair's query -> its document
    sources: dict[str, int]  # title / sentence / span: how the queries were made


@dataclass
class WeakPairEvidence:
    """What `--fusion auto` measured and chose; recorded in metrics.json."""

    pairs: int
    sources: dict[str, int]  # title / sentence / span: how the queries were made
    metric: str
    bm25: float
    dense: float
    weights: dict[str, float]  # dense weight -> the metric of score fusion on the weak pairs
    weight: float  # the chosen one: the best on the pairs (0: BM25 alone)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_weak_pairs(
    corpus: dict[str, dict[str, str]], n: int = WEAK_PAIRS, seed: int = SEED
) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """Up to n documents that can give a pair: ({doc id: query}, {doc id: the rest of it, as a
    passage}, {source: count}). Documents are visited in a seeded random order."""
    rng = random.Random(seed)
    order = list(corpus)
    rng.shuffle(order)
    queries: dict[str, str] = {}
    rests: dict[str, str] = {}
    sources: dict[str, int] = {}
    for doc_id in order:
        if len(queries) == n:
            break
        pair = make_pair(corpus[doc_id], "auto", rng)
        if pair is None:
            continue
        queries[doc_id], rests[doc_id], source = pair
        sources[source] = sources.get(source, 0) + 1
    return queries, rests, sources


def measure_on_weak_pairs(
    corpus: dict[str, dict[str, str]],
    encoder,
    dense_search: DenseSearch,
    doc_ids: list[str],
    n: int = WEAK_PAIRS,
    seed: int = SEED,
    batch_size: int = 32,
    max_tokens_per_batch: int | None = None,
    long_documents: str = "split",
) -> WeakPairRuns | None:
    """The BM25 and dense runs of held-out weak pairs, with their qrels; None if no document gives one.
    `dense_search` searches the encoded corpus (in `doc_ids` order); only the sampled documents' rests
    are encoded here, and they take the place of their documents in both sides' results."""
    from llara.retrieval.bm25 import BM25

    queries, rests, sources = sample_weak_pairs(corpus, n, seed)
    if not queries:
        return None
    qids = [f"weak-{d}" for d in queries]
    qrels = {q: {d: 1} for q, d in zip(qids, queries, strict=True)}

    texts = {d: format_document(doc) for d, doc in corpus.items()} | rests
    bm25 = BM25(list(texts), list(texts.values())).search(qids, list(queries.values()), k=DEPTH)

    opts = {"batch_size": batch_size, "max_tokens_per_batch": max_tokens_per_batch, "show_progress_bar": False}
    q_emb = encoder.encode_queries(list(queries.values()), **opts)
    # the rests are read as the corpus was (split into passages, or truncated); each scores its best passage
    rest_emb, passages = encoder.encode_documents(
        [{"title": "", "text": r} for r in rests.values()], long_documents=long_documents, **opts
    )
    held_out = set(rests)
    # the corpus minus the sampled documents (searched a little deeper to make up for them), plus their rests
    scores, rows = dense_search(q_emb, min(DEPTH + len(held_out), len(doc_ids)))
    rest_scores = np.full((len(qids), len(rests)), -np.inf, dtype=np.float32)
    np.maximum.at(rest_scores.T, np.asarray(passages.owner), (q_emb @ rest_emb.T).T)
    dense: Run = {}
    for i, qid in enumerate(qids):
        found = {doc_ids[j]: float(s) for s, j in zip(scores[i], rows[i], strict=True) if j >= 0}
        found = {d: s for d, s in found.items() if d not in held_out}
        found |= {d: float(s) for d, s in zip(rests, rest_scores[i], strict=True)}
        dense[qid] = dict(sorted(found.items(), key=lambda kv: -kv[1])[:DEPTH])
    return WeakPairRuns(bm25, dense, qrels, sources)


def choose_fusion(runs: WeakPairRuns | None) -> Fusion:
    """`--fusion auto`: the score fusion whose dense weight scores best on the weak pairs
    (`measure_on_weak_pairs`; 0: BM25 alone). A corpus that gives no pair (every record a few words)
    keeps equal weights, with a warning."""
    if runs is None:
        log.warning("fusion auto: no document gives a weak pair (all too short); equal-weight RRF")
        return Fusion("rrf")
    evidence = weigh(runs)
    return Fusion("auto", evidence.weight, weight_source="weak pairs", evidence=evidence.to_dict())


def weigh(runs: WeakPairRuns) -> WeakPairEvidence:
    """Score BM25, dense and score fusion at every weight of WEIGHTS on the pairs; pick the best weight."""

    def score(run: Run) -> float:
        return mean_scores(per_query_scores(run, runs.qrels, (METRIC,)), (METRIC,))[METRIC]

    fused = {w: score(fuse(runs.bm25, runs.dense, Fusion("score", w), DEPTH)) for w in WEIGHTS}
    best = min(WEIGHTS, key=lambda w: (-round(fused[w], 12), w))
    return WeakPairEvidence(
        pairs=len(runs.qrels),
        sources=runs.sources,
        metric=METRIC,
        bm25=score(runs.bm25),
        dense=score(runs.dense),
        weights={f"{w:g}": v for w, v in fused.items()},
        weight=best,
    )


READING = ("long_documents", "passage_max_length")  # how an index read its documents: a recorded choice's key


def index_reading(meta: dict) -> dict:
    """How an index (its meta.json) read its documents, as `record_fusion` keys a choice by it."""
    return {key: meta.get(key) for key in READING}


def corpus_fingerprint(corpus: dict[str, dict[str, str]]) -> str:
    """A short hash of a corpus's ids, titles and texts in order: which corpus a recorded choice was made on."""
    digest = hashlib.sha256()
    for doc_id, doc in corpus.items():
        digest.update(json.dumps([doc_id, doc.get("title") or "", doc.get("text") or ""]).encode("utf-8"))
    return digest.hexdigest()[:16]


def record_fusion(model: str | Path, corpus: dict[str, dict[str, str]], fusion: Fusion, reading: dict) -> None:
    """Save a `--fusion auto` choice in the model folder's llara.json (`fusion`), with the corpus it was made
    on and how documents were read (`reading`: the index's long_documents and passage_max_length)."""
    from llara.modeling.config import ModelConfig

    config = ModelConfig.load(model)
    if config is None:
        raise ValueError(f"{model} has no llara.json to record the fusion in")
    record = {"corpus_sha256": corpus_fingerprint(corpus), "documents": len(corpus), **reading, **fusion.to_dict()}
    replace(config, fusion=record).save(model)


def recorded_fusion(model: str | Path, corpus: dict[str, dict[str, str]], reading: dict) -> Fusion | None:
    """The `--fusion auto` choice recorded in the model's llara.json for this corpus read this way, if any."""
    from llara.modeling.config import ModelConfig

    config = ModelConfig.load(model)  # None for a model without llara.json (a built-in, a GGUF file)
    found = config.fusion if config else None
    if not found or found.get("method") != "auto" or found.get("corpus_sha256") != corpus_fingerprint(corpus):
        return None
    if any(found.get(key) != value for key, value in reading.items()):
        return None
    if not isinstance(found.get("evidence"), dict) or not isinstance(found.get("weight"), int | float):
        log.warning("%s/llara.json: its fusion record is incomplete; measuring again", model)
        return None
    evidence = {**found["evidence"], "recorded_in": str(Path(str(model)) / "llara.json")}
    return Fusion("auto", found["weight"], weight_source="weak pairs", evidence=evidence)


def fusion_for_index(corpus: dict[str, dict[str, str]], encoder, index, model: str | Path, **batching) -> Fusion:
    """`--fusion auto` for hybrid search over an index (`llara search`, `llara serve`): the choice the
    model's llara.json records for this corpus read as the index reads it, else measured on weak pairs."""
    reading = index_reading(index.meta)
    found = recorded_fusion(model, corpus, reading)
    if found is not None:
        return found
    runs = measure_on_weak_pairs(
        corpus, encoder, index.search, index.ids, long_documents=reading["long_documents"] or "truncate", **batching
    )
    return choose_fusion(runs)
