"""`--fusion auto`: the hybrid's dense weight chosen on held-out weak pairs of the corpus, no labels.

The case it exists for: a dense model far below BM25 (the raw built-in model on the real arXiv set),
where equal-weight RRF drags the hybrid below BM25 alone."""

import random

import numpy as np
import pytest

from llara.calibration import WEIGHTS, WeakPairRuns, measure_on_weak_pairs, sample_weak_pairs, weigh
from llara.comparison import permutation_pvalue
from llara.data.beir import load_beir
from llara.evaluation import evaluate_hybrid
from llara.retrieval.dense import flat_index, search
from llara.retrieval.fusion import Fusion, fuse
from llara.scoring import per_query_scores
from tests.conftest import WORDS, BagOfWords


def sentences_corpus(n: int = 60, seed: int = 0) -> dict[str, dict[str, str]]:
    rng = random.Random(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(6)).capitalize() + "."

    return {f"d{i}": {"title": "", "text": " ".join(sentence() for _ in range(4))} for i in range(n)}


def test_weak_pairs_take_a_sentence_out_of_their_document():
    corpus = sentences_corpus()
    queries, rests, sources = sample_weak_pairs(corpus, n=20)
    assert len(queries) == 20 and sources == {"sentence": 20} and queries.keys() == rests.keys()
    for d, q in queries.items():
        assert q in corpus[d]["text"] and q not in rests[d]
        assert len(rests[d].split()) == len(corpus[d]["text"].split()) - len(q.split())
    assert sample_weak_pairs(corpus, n=20) == (queries, rests, sources)  # seeded
    assert sample_weak_pairs({"x": {"title": "", "text": "Too short."}}) == ({}, {}, {})


def test_both_sides_search_the_corpus_with_the_rests_in_place_of_their_documents():
    corpus = sentences_corpus()
    encoder = BagOfWords()
    doc_ids = list(corpus)
    index = flat_index(encoder.encode_corpus(list(corpus.values())))
    runs = measure_on_weak_pairs(corpus, encoder, lambda q, k: search(index, q, k), doc_ids, n=20)
    queries, rests, _ = sample_weak_pairs(corpus, n=20)
    assert set(runs.qrels) == {f"weak-{d}" for d in queries}
    for d, q in queries.items():
        qid = f"weak-{d}"
        assert runs.qrels[qid] == {d: 1}
        # the dense score of a sampled document is its rest's, not the whole document's
        want = (encoder.encode_queries([q]) @ encoder.encode_corpus([{"title": "", "text": rests[d]}]).T).item()
        got = runs.dense[qid][d]  # 60 documents: each side returns all of them
        assert got == pytest.approx(want, abs=1e-6) and len(runs.dense[qid]) == 60
        whole = (encoder.encode_queries([q]) @ encoder.encode_corpus([corpus[d]]).T).item()
        assert whole > got + 1e-4  # the whole document (holding the query) would score higher


def test_weigh_picks_bm25_alone_for_a_useless_dense_side_and_a_high_weight_for_a_good_one():
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(50)]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(40)}

    def ranking(first_for: float) -> dict:
        run = {}
        for i in range(40):
            others = [d for d in docs if d != f"d{i}"]
            rng.shuffle(others)
            at = 0 if rng.random() < first_for else rng.randrange(15, 49)
            order = others[:at] + [f"d{i}"] + others[at:]
            run[f"q{i}"] = {d: 1.0 - r / 100 for r, d in enumerate(order)}
        return run

    bm25, noise, oracle = ranking(0.6), ranking(0.0), ranking(1.0)
    weak = weigh(WeakPairRuns(bm25, noise, qrels, {"sentence": 40}))
    assert weak.weight == 0.0 and weak.dense < 0.2 < weak.bm25 and len(weak.weights) == len(WEIGHTS)
    assert (
        Fusion("auto", weak.weight, weight_source="weak pairs", evidence=weak.to_dict())
        .describe()
        .startswith("BM25 alone: on 40 held-out weak pairs of the corpus nDCG@10 was BM25 ")
    )
    strong = weigh(WeakPairRuns(bm25, oracle, qrels, {"sentence": 40}))
    assert strong.weight > 0.5 and strong.weights[f"{strong.weight:g}"] == 1.0


@pytest.mark.slow
def test_raw_model_hybrid_is_not_significantly_worse_than_bm25_on_arxiv(arxiv_dir, smollm2_dir):
    """The raw built-in model is far below BM25 on arXiv titles -> abstracts: the default hybrid must not
    be significantly worse than BM25 (paired randomization test); equal-weight RRF is recorded beside it."""
    from llara.inference.encoder import LlaraEncoder

    data = load_beir(arxiv_dir)
    encoder = LlaraEncoder.from_pretrained(smollm2_dir)
    fusion = Fusion()
    result = evaluate_hybrid(encoder, data, fusion, k=100, show_progress_bar=False)
    info = result.info["fusion"]
    evidence = info["evidence"]
    assert info["method"] == "auto" and info["weight_source"] == "weak pairs" and evidence["pairs"] == 300
    assert evidence["sources"] == {"sentence": 300}  # the arXiv corpus has no titles: ICT sentences
    components = info["components"]
    assert components["dense"]["nDCG@10"] < 0.5 * components["bm25"]["nDCG@10"]  # far below BM25

    # the fused run, per query, against BM25 alone (the runs it fused, kept: encoding again costs a minute)
    bm25_run, dense_run = result.components["bm25"], result.components["dense"]

    def per_query(run) -> np.ndarray:
        scores = per_query_scores(run, data.qrels, ("nDCG@10",))
        return np.array([scores[q]["nDCG@10"] for q in sorted(data.qrels)])

    bm25 = per_query(bm25_run)
    auto = per_query(result.run)
    equal = per_query(fuse(bm25_run, dense_run, Fusion("rrf"), 100))
    p_auto, _ = permutation_pvalue(auto, bm25)
    p_equal, _ = permutation_pvalue(equal, bm25)
    print(
        f"arXiv, raw smollm2: BM25 {bm25.mean():.3f}, dense {components['dense']['nDCG@10']:.3f}, "
        f"auto (weight {result.fusion.weight:g}) {auto.mean():.3f} p={p_auto:.4f}, "
        f"equal RRF {equal.mean():.3f} p={p_equal:.4f}"
    )
    assert auto.mean() >= bm25.mean() or p_auto >= 0.05
    # what the default was before: equal-weight RRF loses to BM25 here, significantly (what this test guards)
    assert equal.mean() < bm25.mean() and p_equal < 0.05
