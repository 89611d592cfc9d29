"""`llara pairs --query-source generated`: queries an instruct model writes for each document (doc2query)."""

import json
import re

import pytest

from llara.data.beir import format_document
from llara.errors import LlaraError
from llara.training import mining
from llara.training.query_generation import clean_query, copied, generate_queries
from tests.conftest import run_cli


def rows(path):
    return [json.loads(line) for line in open(path)]


def test_clean_query_keeps_the_query_of_a_reply():
    assert clean_query("Query: dense retrieval with LLMs\nThis query asks ...") == "dense retrieval with LLMs"
    assert clean_query('\n  "library catalogue subject indexing"  ') == "library catalogue subject indexing"
    assert clean_query("**Search query:** protein folding") == "protein folding"
    assert clean_query("retrieval") == "" and clean_query("  \n ") == ""  # one word or none: no query


def test_a_document_given_no_query_takes_auto_and_the_summary_counts_both(tmp_path, monkeypatch):
    """Where the generator writes nothing, the document's title (auto's first source) is its query; a
    generated query's positive is the whole document, title included."""
    docs = [
        {"_id": "a", "title": "Vector search", "text": "Search over vectors of documents and queries."},
        {"_id": "b", "title": "Library catalogues", "text": "Catalogues index books by subject and author."},
        {"_id": "c", "title": "", "text": "Stemming merges word forms. It helps recall. Precision may drop."},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    seen = []

    def fake_generate(texts, model, batch_size, precision):
        seen.extend(texts)
        return ["nearest neighbour vectors", "", "stemming and recall"]

    monkeypatch.setattr("llara.training.query_generation.generate_queries", fake_generate)
    summary = mining.pairs(corpus, tmp_path / "p.jsonl", "generated", negatives=2, hold_out=frozenset())
    assert summary.sources == {"generated": 2, "title": 1}
    got = {r["doc_id"]: r for r in rows(tmp_path / "p.jsonl")}
    assert got["a"]["query"] == "nearest neighbour vectors" and got["a"]["source"] == "generated"
    assert got["a"]["pos"] == ["Vector search Search over vectors of documents and queries."]  # format_document
    assert got["b"]["query"] == "Library catalogues" and got["b"]["source"] == "title"
    assert seen[0].startswith("Vector search") and len(seen) == 3  # each document whole, in order


def test_a_model_without_a_chat_template_is_refused(tiny_model_dir):
    with pytest.raises(LlaraError, match="no chat template"):
        generate_queries(["a text about search"], str(tiny_model_dir))


def test_a_copy_of_the_document_is_no_query():
    doc = "Photographic and computer systems in biomedical information handling: both are proposed."
    assert copied("photographic and computer systems in biomedical", doc)  # its opening words
    assert copied("Text: computer systems in biomedical information handling", doc)  # 6 of 7 words one run
    assert not copied("photographic and computer-based systems for medical records", doc)
    assert not copied("indexing medical images", doc) and copied("", doc)


def test_smollm2_through_llara_pairs(arxiv_subset, smollm2_dir, tmp_path):
    """The built-in model as `llara pairs --query-source generated` runs it: every document gets a row; a
    generated query is a few words and no copy of its document; the rest take auto's title, counted."""
    corpus = tmp_path / "corpus.jsonl"
    lines = (arxiv_subset / "corpus.jsonl").read_text().splitlines()[:6]
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pairs.jsonl"
    res = run_cli("pairs", "--corpus", corpus, "--output", out, "--query-source", "generated",
                  "--generator", smollm2_dir, "--negatives", "2")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    said = " ".join((res.stdout + res.stderr).split())
    got = rows(out)
    assert len(got) == 6
    generated = [r for r in got if r["source"] == "generated"]
    assert all(r["source"] == "title" for r in got if r["source"] != "generated")
    unused = re.search(r"(\d+) generated queries empty or copied", said)
    assert (int(unused[1]) if unused else 0) == 6 - len(generated), said
    docs = {json.loads(line)["_id"]: json.loads(line) for line in lines}
    for row in generated:
        query = row["query"]
        assert 2 <= len(query.split()) <= 20 and not copied(query, row["pos"][0]), query
        assert row["pos"] == [format_document(docs[row["doc_id"]])]
