"""`llara mine` and `llara pairs`: rows in the fine-tuning format, no positive ever a negative."""

from __future__ import annotations

import json
import random

import pytest

from llara.data.weak_pairs import make_pair, strip_title
from llara.errors import LlaraError
from llara.training.finetune.data import read_train_file
from llara.training.mining import mine, pairs, parse_range
from tests.conftest import run_cli


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_strip_title_only_removes_a_leading_copy():
    assert strip_title("Use of Libraries", "Use of libraries. This report studies use.") == "This report studies use."
    assert strip_title("Use of Libraries", "USE OF LIBRARIES: a study") == "a study"
    assert strip_title("Use of Libraries", "A study of the use of libraries.") == "A study of the use of libraries."
    assert strip_title("", "Some text") == "Some text"


def test_sentence_query_leaves_the_positive():
    doc = {"title": "T", "text": "First sentence is here. Second sentence is there. Third one comes last."}
    query, positive, source = make_pair(doc, "sentence", random.Random(0))
    assert query in doc["text"] and query not in positive and positive.startswith("T ") and source == "sentence"
    assert make_pair({"title": "T", "text": "Only one sentence here."}, "sentence", random.Random(0)) is None


def test_parse_range():
    assert parse_range("10-100") == (10, 100)
    for bad in ("100-10", "ten", "5"):
        with pytest.raises(LlaraError, match="--range"):
            parse_range(bad)


def test_pairs_on_real_arxiv(arxiv_tagged_dir, tmp_path):
    out = tmp_path / "pairs.jsonl"
    summary = pairs(arxiv_tagged_dir / "corpus.jsonl", out, negatives=5)  # titled: one row a document
    got = rows(out)
    corpus = {json.loads(line)["_id"]: json.loads(line) for line in (arxiv_tagged_dir / "corpus.jsonl").open()}
    assert summary.rows == len(got) == len(corpus)  # every arXiv paper has a title
    texts = {d: strip_title(c["title"], c["text"]) for d, c in corpus.items()}
    for row in got:
        doc = corpus[row["doc_id"]]
        assert row["query"] == doc["title"].strip()
        assert row["pos"] == [texts[row["doc_id"]]]
        assert row["doc_id"] not in row["neg_ids"] and len(row["neg"]) <= 5
        assert all(corpus[n]["title"].strip().lower() != row["query"].lower() for n in row["neg_ids"])
        assert row["neg"] == [texts[n] for n in row["neg_ids"]]
    assert sum(len(r["neg"]) == 5 for r in got) > 0.95 * len(got)
    # no positive gives its title away at the start
    assert all(not r["pos"][0].lower().startswith(r["query"].lower()) for r in got)
    assert len(read_train_file(out)) == len(got)  # the fine-tuning reader accepts what pairs wrote


def test_pairs_skips_untitled_and_excludes_same_title(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    docs = [
        {"_id": "a", "title": "Library classification", "text": "Library classification. Dewey and colon schemes."},
        {"_id": "b", "title": "Library classification", "text": "A duplicate record about classification schemes."},
        {"_id": "c", "title": "", "text": "An untitled note on classification of library books."},
        {"_id": "d", "title": "Search engines", "text": "Ranking documents for a query with classification."},
    ]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "p.jsonl"
    result = run_cli("pairs", "--corpus", corpus, "--output", out, "--negatives", "3", "--query-source", "title")
    assert result.returncode == 0, result.stderr
    assert "1 no title" in result.stderr.replace("\n", " ")
    got = {r["doc_id"]: r for r in rows(out)}
    assert set(got) == {"a", "b", "d"}
    assert got["a"]["pos"] == ["Dewey and colon schemes."]
    assert "b" not in got["a"]["neg_ids"] and "a" not in got["b"]["neg_ids"]  # same title: not a negative
    assert "c" in got["a"]["neg_ids"]  # untitled documents still serve as negatives


def test_pairs_from_a_corpus_without_titles(tmp_path):
    """`auto` (the default): a title where there is one, else one sentence against the rest (ICT), else
    a span of words against the rest; too short for any: left out with a count. A record repeated under
    another id is never a negative."""
    long = "Dense retrieval maps texts to vectors. A query is encoded the same way. The nearest ones win."
    one = "a single long sentence about how library catalogues index books by subject and by author names"
    docs = [
        {"_id": "t", "title": "Vector search", "text": "Search over vectors of documents and queries."},
        {"_id": "s", "title": "", "text": long},
        {"_id": "s2", "title": "", "text": long},  # the same record again
        {"_id": "w", "title": "", "text": one},
        {"_id": "x", "title": "", "text": "query vectors, documents, library"},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "p.jsonl"
    result = run_cli("pairs", "--corpus", corpus, "--output", out, "--negatives", "3", "--min-rows", "0")
    assert result.returncode == 0, result.stderr
    line = " ".join(result.stderr.split())
    assert "4 rows (1 title, 2 sentence, 1 span queries)" in line and "1 no title, one sentence" in line, line
    got = {r["doc_id"]: r for r in rows(out)}
    assert {d: r["source"] for d, r in got.items()} == {"t": "title", "s": "sentence", "s2": "sentence", "w": "span"}
    span = got["w"]["query"].split()
    assert 4 <= len(span) <= 16 and " ".join(span) in one and " ".join(span) not in got["w"]["pos"][0]
    assert "s2" not in got["s"]["neg_ids"] and "s" not in got["s2"]["neg_ids"]
    assert "x" in {n for r in got.values() for n in r["neg_ids"]}  # a record too short to query is a negative
    for mode in ("title", "sentence"):  # one source alone never stops on records that lack it
        res = run_cli("pairs", "--corpus", corpus, "--output", tmp_path / f"{mode}.jsonl", "--query-source", mode)
        assert res.returncode == 0, res.stderr
    corpus.write_text(json.dumps({"_id": "1", "text": "two words"}) + "\n")
    bad = run_cli("pairs", "--corpus", corpus, "--output", tmp_path / "none.jsonl")
    assert bad.returncode == 2 and "no document can give" in bad.stderr and "Traceback" not in bad.stderr


def test_a_small_corpus_gives_further_queries_until_min_rows(tmp_path):
    """Below --min-rows, each document whose query is a sentence gives another sentence a round, then
    spans; one whose query is a span gives spans; a titled document keeps its title alone. Never the same
    query twice, never the query's words in its positive; ceil(min_rows / documents) rounds, stopping once
    no document has a new query."""
    sentences = [f"Sentence number {w} talks about topic {w} at length." for w in ("one", "two", "three")]
    docs = [
        {"_id": "a", "title": "Three sentences", "text": " ".join(sentences)},
        {"_id": "b", "title": "", "text": " ".join(s.replace("topic", "subject") for s in sentences)},
        {"_id": "c", "title": "", "text": "one two three four five six seven eight nine ten eleven twelve"},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "p.jsonl"
    summary = pairs(corpus, out, negatives=2, min_rows=12)  # four rounds
    got = rows(out)
    by_doc = {d["_id"]: [r["source"] for r in got if r["doc_id"] == d["_id"]] for d in docs}
    assert by_doc == {"a": ["title"], "b": ["sentence"] * 3 + ["span"], "c": ["span"] * 4}
    assert summary.rows == len(got) == 9 and summary.rounds == 4
    assert summary.sources == {"title": 1, "sentence": 3, "span": 5}
    for doc_id in "bc":
        queries = [r["query"] for r in got if r["doc_id"] == doc_id]
        assert len(set(queries)) == len(queries)  # never the same query twice
    assert all(r["query"] not in r["pos"][0] for r in got if r["source"] != "title")
    assert read_train_file(out) and all(r["doc_id"] not in r["neg_ids"] for r in got)
    # "c" has 9 spans of 4 words: rounds go on while a document has a new query, then stop
    summary = pairs(corpus, out, negatives=2, min_rows=10_000)
    assert summary.rows == len(rows(out)) < 10_000 and summary.rounds > 9
    assert sum(r["doc_id"] == "c" for r in rows(out)) == 9
    assert pairs(corpus, out, "title", negatives=2, min_rows=100).rows == 1  # a title is one query only
    assert pairs(corpus, out, negatives=2, min_rows=3).rows == 3  # enough first queries: one a document
    res = run_cli("pairs", "--corpus", corpus, "--output", out, "--min-rows", "6")
    said = " ".join(res.stderr.split())
    assert res.returncode == 0 and "5 rows" in said and "up to 2 a document (--min-rows 6)" in said, said
    bad = run_cli("pairs", "--corpus", corpus, "--output", tmp_path / "bad.jsonl", "--min-rows", "-1")
    assert bad.returncode == 2 and "--min-rows must be 0 or more" in bad.stderr and "Traceback" not in bad.stderr


def test_mine_bm25_excludes_positives_and_respects_range(arxiv_subset, tmp_path):
    out = tmp_path / "mined.jsonl"
    summary = mine("bm25", arxiv_subset, out, split="test", rank_range="2-30", negatives=6)
    got = rows(out)
    qrels = {}
    for line in (arxiv_subset / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    assert summary.rows == len(got) == len(qrels)
    from llara.data.beir import load_beir
    from llara.evaluation import evaluate_bm25

    run = evaluate_bm25(load_beir(arxiv_subset)).run
    for row in got:
        ranked = sorted(run[row["query_id"]], key=lambda d: -run[row["query_id"]][d])
        assert set(row["pos_ids"]) == {d for d, s in qrels[row["query_id"]].items() if s > 0}
        assert not set(row["neg_ids"]) & set(row["pos_ids"])
        assert set(row["neg_ids"]) <= set(ranked[2:30])
        assert len(row["neg"]) == len(row["neg_ids"]) <= 6 and len(row["pos"]) == len(row["pos_ids"])


def test_mine_cli_refuses_a_missing_split(arxiv_subset, tmp_path):
    out = tmp_path / "mined.jsonl"
    result = run_cli("mine", "--method", "bm25", "--data", arxiv_subset, "--output", out, "--split", "train")
    assert result.returncode == 2 and "train.tsv" in result.stderr and not out.exists()


def test_arxiv_split_is_disjoint_and_keeps_test(tmp_path):
    pytest.importorskip("cherche", reason="the arXiv data ships in cherche")
    from llara.data.arxiv import write_arxiv_beir
    from llara.data.beir import load_beir

    folder = write_arxiv_beir(tmp_path / "arxiv")
    train, dev, test = (load_beir(folder, s) for s in ("train", "dev", "test"))
    assert len(test.queries) == 314 and not set(train.queries) & set(dev.queries)
    assert set(train.queries) | set(dev.queries) == set(test.queries)
    assert 90 < len(train.queries) < 120
    # deterministic: a second folder gets the same split
    again = load_beir(write_arxiv_beir(tmp_path / "arxiv2"), "train")
    assert set(again.queries) == set(train.queries)


def test_mine_with_a_dense_model(tiny_model_dir, arxiv_subset, tmp_path):
    out = tmp_path / "dense.jsonl"
    result = run_cli("mine", "--model", tiny_model_dir, "--data", arxiv_subset, "--split", "test", "--output", out)
    assert result.returncode == 0, result.stderr[-2000:]
    got = rows(out)
    assert len(got) == 10 and all(len(r["neg"]) == 15 and not set(r["neg_ids"]) & set(r["pos_ids"]) for r in got)


def test_a_text_without_capitals_splits_at_every_full_stop():
    from llara.data.weak_pairs import split_sentences

    lower = "glucose levels were measured in plasma . the levels were higher at delivery . no effect was seen here ."
    assert len(split_sentences(lower)) == 3  # MEDLINE's records: all lower case, " . " between sentences
    mixed = "We use e.g. the methods of Smith here. Then we test them on data."
    assert split_sentences(mixed) == ["We use e.g. the methods of Smith here.", "Then we test them on data."]
    query, positive, source = make_pair({"title": "", "text": lower}, "auto", random.Random(0))
    assert source == "sentence" and query in lower and query not in positive
