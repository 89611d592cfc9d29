"""Long documents read whole: split into overlapping passages, a document scored by its best passage
(MaxP), the same way in `encode`/`index`/`search` and `evaluate` (issue 26 item 1)."""

import json

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from llara.data.beir import format_document, load_beir
from llara.inference.encoder import LlaraEncoder
from llara.retrieval.dense import owners, search
from llara.retrieval.runs import read_trec_run

LENGTH = 64  # the tiny model's tokenizer makes every arXiv abstract several times longer than this


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32", passage_max_length=LENGTH)


def test_a_long_document_becomes_passages_that_fit_overlap_and_cover_it(encoder, arxiv_tagged_dir):
    data = load_beir(arxiv_tagged_dir)
    doc = {"title": "Retrieval", "text": next(iter(data.corpus.values()))["text"]}  # a title that leaves room
    short = {"title": "A title", "text": "dense retrieval"}
    found = encoder.passages([short, doc])
    assert found.documents == 2 and found.long == 1 and found.texts[0] == format_document(short)
    texts = found.texts[1:]
    assert len(texts) >= 3 and found.owner == [0] + [1] * len(texts)
    before = encoder.prompts.truncated
    encoder.prompts.build(texts, "passage", LENGTH)
    assert encoder.prompts.truncated == before, "a passage was cut: it did not fit the length"
    title, body = doc["title"].strip(), doc["text"].strip()
    spans = [t.removeprefix(title + " ") for t in texts]
    assert all(t.startswith(title + " ") for t in texts)  # the title carried into each passage
    assert all(s in body for s in spans)  # spans of the text itself, cut at token boundaries
    starts = [body.index(s) for s in spans]
    ends = [a + len(s) for a, s in zip(starts, spans, strict=True)]
    assert starts[0] == 0 and ends[-1] == len(body)  # the whole text is read
    assert all(b < e for b, e in zip(starts[1:], ends[:-1], strict=True))  # each overlaps the one before
    assert starts == sorted(starts)
    cut = encoder.passages([short, doc], long_documents="truncate")
    assert cut.texts == [format_document(short), format_document(doc)] and cut.long == 1 and not cut.split
    assert "1 of 2 documents are longer than 64 tokens: split into" in found.counts().summary(LENGTH)
    wordy = {"title": doc["text"][:200], "text": doc["text"]}  # a title over half the room is not repeated
    assert not any(t.startswith(wordy["title"]) for t in encoder.passages([wordy]).texts)


def test_a_document_is_found_by_its_best_passage():
    """`search` with row owners returns each document once, scored by its best row: brute-force MaxP."""
    rng = np.random.default_rng(0)
    owner = np.sort(rng.integers(0, 40, size=300))
    owner = np.unique(owner, return_inverse=True)[1]  # documents 0..n-1, each with >= 1 passage
    rows = rng.standard_normal((len(owner), 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    index = faiss.IndexFlatIP(16)
    index.add(rows)
    n_docs = owner.max() + 1
    best = np.full((7, n_docs), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, owner, (queries @ rows.T).T)
    for k in (5, n_docs, n_docs + 10):
        scores, found = search(index, queries, k, owner=owner)
        assert scores.shape == (7, min(k, n_docs))
        for q in range(7):
            docs = owner[found[q]]
            assert len(set(docs)) == len(docs)  # each document once
            assert np.allclose(scores[q], best[q, docs], atol=1e-5)  # by its best passage
            assert np.allclose(scores[q], np.sort(best[q])[::-1][: len(docs)], atol=1e-5)  # the top k documents
    assert owners(["a", "b", "b", "c"]).tolist() == [0, 1, 1, 2] and owners(["a", "b"]) is None


def test_encode_index_search_and_evaluate_agree_on_split_documents(tiny_model_dir, arxiv_subset, tmp_path):
    from llara.cli import app

    cli = CliRunner()
    model = ["--model", str(tiny_model_dir), "--precision", "fp32", "--passage-max-length", str(LENGTH)]
    queries = str(arxiv_subset / "queries.jsonl")

    def ok(*args):
        res = cli.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        return res.output

    ok("encode", *model, "--corpus", arxiv_subset / "corpus.jsonl", "--output", tmp_path / "emb")
    said = ok("index", "--embeddings", tmp_path / "emb", "--output", tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    n_docs = len(load_beir(arxiv_subset).corpus)
    assert meta["documents"] == n_docs < meta["count"] and meta["long_documents"] == "split"
    assert f"({n_docs} documents)" in said
    ok("search", *model[:4], "--index", tmp_path / "idx", "--queries", queries, "--output", tmp_path / "s.trec")
    ok("evaluate", *model, "--data", arxiv_subset, "--output", tmp_path / "ev", "--top-k", "1000")
    searched, evaluated = read_trec_run(tmp_path / "s.trec"), read_trec_run(tmp_path / "ev" / "run.trec")
    for q in evaluated:  # one document once per query, and the same ranking from the index as from evaluate
        assert len(searched[q]) == n_docs
        top = sorted(evaluated[q], key=lambda d: -evaluated[q][d])[:10]
        assert sorted(searched[q], key=lambda d: -searched[q][d])[:10] == top
        assert all(abs(searched[q][d] - evaluated[q][d]) < 1e-4 for d in top)
    info = json.loads((tmp_path / "ev" / "metrics.json").read_text())["info"]["documents_read"]
    assert info["long_documents"] == "split" and info["documents"] == n_docs and info["documents_long_share"] == 1.0
    assert info["passages"] == meta["count"]

    ok("evaluate", *model, "--data", arxiv_subset, "--output", tmp_path / "cut", "--long-documents", "truncate")
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())["info"]["documents_read"]
    assert cut["long_documents"] == "truncate" and cut["passages"] == n_docs and cut["documents_long"] == n_docs


def test_fine_tuning_reads_a_long_passage_as_the_window_its_query_is_about(encoder, arxiv_tagged_dir):
    """`llara finetune --long-documents split`: a positive or negative longer than the passage length is
    trained on as one of the passages the index holds for it, the one sharing most words with the query;
    `truncate` trains on its first tokens."""
    from llara.training.finetune.data import ContrastiveCollator, best_window

    body = next(iter(load_beir(arxiv_tagged_dir).corpus.values()))["text"]
    windows = encoder.passages([body]).texts
    assert len(windows) >= 3
    last = windows[-1]
    query = " ".join(last.split()[-12:])  # words from the end of the text, beyond the first window
    assert best_window(query, windows) == last
    assert best_window("qzx vvq jjw", windows) == windows[0]  # a tie: the first
    short = "dense retrieval with a language model"
    prompts = encoder.prompts
    split = ContrastiveCollator(prompts, 32, LENGTH, split=True)
    assert split.windows(query, [body, short]) == [last, short]
    ids = split([(query, [body, short])])["passage"]["input_ids"]
    cut = ContrastiveCollator(prompts, 32, LENGTH)([(query, [body, short])])["passage"]["input_ids"]
    assert ids.shape == cut.shape and not (ids == cut).all()  # both fit the length; different text read
    want = prompts.pad(prompts.build([last, short], "passage", LENGTH))["input_ids"]
    assert (ids == want).all()
    titled = {"title": "Retrieval", "text": body}  # a Tevatron-style row: its title carried into the window
    assert split.windows(query, [titled]) == [f"Retrieval {best_window(query, windows_of(encoder, titled))}"]


def windows_of(encoder, doc: dict) -> list[str]:
    """The windows of a titled document's text, without the title `passages` puts in front of each."""
    return [t.removeprefix(doc["title"] + " ") for t in encoder.passages([doc]).texts]
