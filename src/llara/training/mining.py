"""Training rows for `llara finetune`: hard negatives mined from a retriever, or weak pairs from a corpus.

`mine`: for each judged query of a BEIR split, retrieve with a model (FAISS) or BM25 and sample
negatives from a rank range, never a judged positive. `pairs`: no labels at all; a document's title
(or one of its sentences) is the query, its text the positive, and BM25 neighbours the negatives.
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from llara import settings
from llara.data.beir import format_document
from llara.data.io import write_jsonl
from llara.data.weak_pairs import PAIR_SOURCES, SKIP_REASON, make_further_pair, make_pair, normalized, strip_title
from llara.errors import LlaraError
from llara.retrieval.runs import Run
from llara.settings import Precision, option

log = logging.getLogger(__name__)


def parse_range(text: str) -> tuple[int, int]:
    """'10-100' -> (10, 100): ranked list positions [10, 100) (0-based), i.e. skip the top 10."""
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not m or int(m[1]) >= int(m[2]):
        raise LlaraError(f"--range must look like 10-100 (start < end), got {text!r}")
    return int(m[1]), int(m[2])


def ranked(scores: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def sample_negatives(candidates: list[str], n: int, rng: random.Random) -> list[str]:
    return candidates if len(candidates) <= n else rng.sample(candidates, n)


@dataclass
class MineSummary:
    rows: int = 0
    negatives: int = 0
    short: int = 0  # rows with fewer negatives than asked (small corpus or narrow range)
    skipped: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)  # `llara pairs`: rows per query source
    held_out: int = 0  # documents kept out of the rows (`llara pipeline`'s weak-pair check)
    generated_unused: int = 0  # --query-source generated: queries empty or copied from their document
    rounds: int = 1  # `llara pairs`: the most queries one document gave (rounds of `further_rows`)


class MineMethod(StrEnum):
    bm25 = "bm25"
    dense = "dense"


GENERATED = "generated"  # a query an instruct model writes (llara.training.query_generation)
QuerySource = StrEnum("QuerySource", {s: s for s in ("auto", *PAIR_SOURCES, GENERATED)})


@dataclass(frozen=True)
class MineOptions:
    """What `llara mine` takes."""

    data: Path | None = option(None, "dataset folder in BEIR layout", required=True)
    output: Path | None = option(None, "JSONL training file to write", required=True)
    method: MineMethod = option(MineMethod.bm25, "rank with bm25, or with a dense --model")
    model: str | None = settings.model(
        None, "--method dense: built-in name, a .gguf file or a HF folder (default: the built-in smollm2)"
    )
    split: str = option("train", "qrels/<split>.tsv whose queries get rows")
    rank_range: str = settings.rank_range("10-100", "retrieved")
    negatives: int = settings.negatives(15, "retrieved")
    seed: int = settings.seed(42)
    recipe: str | None = settings.recipe()
    batch_size: int = settings.batch_size()
    precision: Precision = settings.precision()


# A corpus whose documents give fewer queries than this gives further ones (`further_rows`): about what
# 12 minutes of fine-tuning on 2 CPU cores train on (~210 steps of 8 rows), so that such a run does not
# pass over the same sentence queries again and again. Where it came from: benchmarks/RESULTS.md.
MIN_ROWS = 2048


@dataclass(frozen=True)
class PairsOptions:
    """What `llara pairs` takes."""

    corpus: Path | None = option(None, "corpus.jsonl (BEIR: _id, title, text); no labels needed", required=True)
    output: Path | None = option(None, "JSONL training file to write", required=True)
    query_source: QuerySource = option(
        QuerySource.auto,
        "the query: the title, one sentence (the rest of the text is the positive), a span of 4-16 words "
        "(likewise), auto: the first of these each document can give, or generated: a query --generator "
        "writes for the document (the whole document is the positive; auto where it writes none)",
        deprecated=("--query",),
    )
    negatives: int = settings.negatives(15, "BM25")
    rank_range: str = settings.rank_range("0-50", "BM25")
    seed: int = settings.seed(42)
    generator: str = option(
        settings.DEFAULT_MODEL, "--query-source generated: the instruct model that writes the queries"
    )
    generation_batch_size: int = option(16, "--query-source generated: documents per generation batch")
    precision: Precision = settings.precision()
    min_rows: int = option(
        MIN_ROWS,
        "while the rows number fewer, each document whose query is a sentence or a span gives one more "
        "(another sentence, else a span; a titled document keeps its title alone); 0: one query a document",
    )


# ---------------------------------------------------------------------------------------- mine
def retrieve(model: str, data, k: int, batch_size: int = 32, **encoder_kwargs) -> Run:
    """Top-k run for every query of `data`: BM25, or a dense model with exact search."""
    if model == "bm25":
        from llara.retrieval.bm25 import BM25

        return BM25.run(data.corpus, data.queries, k)
    from llara.inference.encoder import LlaraEncoder
    from llara.retrieval.dense import exact_search

    encoder = LlaraEncoder.from_pretrained(model, **encoder_kwargs)
    return exact_search(encoder, data.corpus, data.queries, k, batch_size)[0]


def mine(
    model: str,
    data_dir: str | Path,
    output: str | Path,
    split: str = "train",
    rank_range: str = "10-100",
    negatives: int = 15,
    seed: int = 42,
    **encoder_kwargs,
) -> MineSummary:
    """Write {"query", "pos", "neg", "query_id", "pos_ids", "neg_ids"} rows for every judged query."""
    from llara.data.beir import load_beir

    lo, hi = parse_range(rank_range)
    # validates before anything is written; empty documents and queries are left out (and counted):
    # a training row needs text, so they are neither queries, positives nor negatives
    data = load_beir(data_dir, split, training=True)
    run = retrieve(model, data, k=hi, **encoder_kwargs)
    rng = random.Random(seed)
    summary = MineSummary()
    rows = []
    for qid, query in data.queries.items():
        judged_pos = {d for d, rel in data.qrels[qid].items() if rel > 0}
        # a judgement may name a document the corpus lacks (kept for evaluation, with a warning): no text
        positives = [d for d in data.qrels[qid] if d in judged_pos and d in data.corpus]
        if not positives:
            reason = "no positive judgement" if not judged_pos else "no positive in the corpus"
            summary.skipped[reason] = summary.skipped.get(reason, 0) + 1
            continue
        candidates = [d for d in ranked(run.get(qid, {}))[lo:hi] if d not in judged_pos]
        neg_ids = sample_negatives(candidates, negatives, rng)
        summary.short += len(neg_ids) < negatives
        summary.negatives += len(neg_ids)
        rows.append(
            {
                "query": query,
                "pos": [format_document(data.corpus[d]) for d in positives],
                "neg": [format_document(data.corpus[d]) for d in neg_ids],
                "query_id": qid,
                "pos_ids": positives,
                "neg_ids": neg_ids,
            }
        )
    if not rows:
        raise LlaraError(f"no query of split {split!r} has a positive judgement", Path(data_dir) / "qrels")
    summary.rows = write_jsonl(output, rows)
    return summary


# --------------------------------------------------------------------------------------- pairs
def further_rows(
    corpus: dict[str, dict[str, str]],
    made: dict[str, tuple[str, str, str]],
    min_rows: int,
    rng: random.Random,
    summary: MineSummary,
) -> list[tuple[str, str, str, str]]:
    """Where the documents' first queries number fewer than `min_rows`: rounds of one more query from
    every document whose first was a sentence or a span (another sentence, else a span:
    `make_further_pair`), so that fine-tuning on a small corpus meets new queries on each pass instead of
    the same rows again. ceil(min_rows / first queries) rounds in all, each whole, so that no document
    gets more than another by its place in the corpus or because the others ran out; none once a round
    adds nothing."""
    given = {d: {normalized(query)} for d, (query, *_) in made.items()}
    rows: list[tuple[str, str, str, str]] = []
    for _ in range(1, math.ceil(min_rows / len(made))):
        added = [
            (doc_id, *pair)
            for doc_id, (*_, first_source) in made.items()
            if (pair := make_further_pair(corpus[doc_id], first_source, given[doc_id], rng)) is not None
        ]
        if not added:
            break
        for doc_id, query, *_ in added:
            given[doc_id].add(normalized(query))
        rows += added
        summary.rounds += 1
    return rows


def pairs(
    corpus_path: str | Path,
    output: str | Path,
    query_mode: str = "auto",
    negatives: int = 15,
    rank_range: str = "0-50",
    seed: int = 42,
    hold_out: frozenset[str] = frozenset(),
    generator: str = settings.DEFAULT_MODEL,
    generation_batch_size: int = 16,
    precision: str = "auto",
    min_rows: int = MIN_ROWS,
) -> MineSummary:
    """Weak supervision from an unlabeled BEIR corpus.jsonl: one row per usable document, and where that
    makes fewer than `min_rows`, rounds of further queries from each (`further_rows`). Documents in
    `hold_out` give no row (they may still be another row's negative): `llara pipeline` keeps the
    documents of its weak-pair check (llara.calibration) out of training, so the check stays held out.
    `generated` queries are written by `generator`; a document it writes none for takes `auto`'s."""
    from llara.data.beir import read_corpus
    from llara.retrieval.bm25 import BM25

    if query_mode not in ("auto", *PAIR_SOURCES, GENERATED):
        raise LlaraError(f"--query-source must be auto, {', '.join(PAIR_SOURCES)}, {GENERATED}; got {query_mode!r}")
    if min_rows < 0:
        raise LlaraError(f"--min-rows must be 0 or more, got {min_rows}")
    lo, hi = parse_range(rank_range)
    corpus = read_corpus(corpus_path, keep_empty=False)  # an empty document is no query, positive or negative
    rng = random.Random(seed)
    summary = MineSummary(held_out=sum(d in hold_out for d in corpus))
    # Negatives take their row's positive form (title-stripped text for title queries, title + text for
    # the others), so the model cannot tell a positive from a negative by whether it has a title.
    forms = {
        "title": {d: strip_title(doc["title"], doc["text"]) for d, doc in corpus.items()},
        "text": {d: format_document(doc) for d, doc in corpus.items()},
    }
    usable = [d for d in corpus if d not in hold_out]
    generated, fallback = {}, query_mode  # fallback: how a document without a generated query gives one
    if query_mode == GENERATED:
        from llara.training.query_generation import copied, generate_queries

        documents = [forms["text"][d] for d in usable]
        queries = generate_queries(documents, generator, generation_batch_size, precision)
        generated = {d: q for d, q in zip(usable, queries, strict=True) if not copied(q, forms["text"][d])}
        summary.generated_unused, fallback = len(usable) - len(generated), "auto"
    made: dict[str, tuple[str, str, str]] = {}
    for doc_id in usable:
        doc = corpus[doc_id]
        if doc_id in generated:  # neither empty nor a copy (`copied`)
            pair = generated[doc_id], forms["text"][doc_id], GENERATED
        else:
            pair = make_pair(doc, fallback, rng)
        if pair is None:
            reason = SKIP_REASON[fallback]
            summary.skipped[reason] = summary.skipped.get(reason, 0) + 1
        else:
            made[doc_id] = pair
    if not made:
        raise LlaraError(f"no document can give a ({query_mode}, text) pair: {SKIP_REASON[fallback]}", corpus_path)
    made_rows = [(doc_id, *pair) for doc_id, pair in made.items()]
    made_rows += further_rows(corpus, made, min_rows, random.Random(seed + 1), summary)
    for *_, source in made_rows:
        summary.sources[source] = summary.sources.get(source, 0) + 1
    texts = forms["title" if query_mode == "title" else "text"]  # what BM25 ranks
    doc_ids = [d for d in corpus if texts[d]]
    bm25 = BM25(doc_ids, [texts[d] for d in doc_ids])
    qids = [str(i) for i in range(len(made_rows))]
    run = bm25.search(qids, [query for _, query, *_ in made_rows], k=min(hi + 1, len(doc_ids)))
    titles = {d: normalized(doc["title"]) for d, doc in corpus.items()}
    same_text = {d: normalized(forms["text"][d]) for d in corpus}  # real corpora repeat records under other ids
    rows = []
    for qid, (doc_id, query, positive, source) in zip(qids, made_rows, strict=True):
        form = forms["title" if source == "title" else "text"]
        same = titles[doc_id]
        # Never the document itself, nor one with the same title or text (a duplicate is no negative).
        candidates = [
            d
            for d in ranked(run.get(qid, {}))
            if d != doc_id and not (same and titles[d] == same) and same_text[d] != same_text[doc_id] and form[d]
        ]
        neg_ids = sample_negatives(candidates[lo:hi], negatives, rng)
        summary.short += len(neg_ids) < negatives
        summary.negatives += len(neg_ids)
        rows.append(
            {
                "query": query,
                "pos": [positive],
                "neg": [form[d] for d in neg_ids],
                "doc_id": doc_id,
                "source": source,
                "neg_ids": neg_ids,
            }
        )
    summary.rows = write_jsonl(output, rows)
    return summary
