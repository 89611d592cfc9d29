"""Pretraining rows: chunking on sentences, EBAR targets, deterministic streaming order, bad input."""

import itertools
import json

import pytest
from transformers import AutoTokenizer

from llara.errors import LlaraError
from llara.training.pretrain.data import (
    PretrainDataset,
    chunk_ids,
    count_documents,
    halve,
    iter_documents,
    split_sentences,
)

DOC1 = "The library is a system. The index is a model of data! Is the query a text? The search user reads."
DOC2 = "A dense passage retrieval model embeds text. Information science is old."


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, rows):
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_split_sentences_keeps_all_text():
    parts = split_sentences(DOC1)
    assert len(parts) == 4 and "".join(parts) == DOC1


def test_chunk_ids_packs_whole_sentences_within_budget():
    sentences = [[1, 2, 3], [4, 5], [6, 7, 8, 9], list(range(10, 21))]
    chunks = chunk_ids(sentences, budget=5)
    assert all(len(c) <= 5 for c in chunks)
    assert list(itertools.chain(*chunks)) == list(itertools.chain(*sentences))  # nothing lost, order kept
    assert chunks[0] == [1, 2, 3, 4, 5] and chunks[1] == [6, 7, 8, 9]  # a sentence is not split if it fits


def test_halve_cuts_at_the_sentence_boundary_nearest_the_middle():
    assert halve([[1, 2, 3], [4], [5, 6, 7, 8]]) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert halve([[1], [2, 3, 4, 5, 6]]) == [[1], [2, 3, 4, 5, 6]]  # whole sentences only
    assert halve([[1, 2, 3, 4, 5], [6]]) == [[1, 2, 3, 4, 5], [6]]


def test_a_short_document_is_halved_so_ebar_has_a_target(tmp_path, tokenizer):
    corpus = write(tmp_path / "c.txt", f"{DOC1}\n\nOne sentence only.\n")
    whole = tokenizer(split_sentences(DOC1), add_special_tokens=False)["input_ids"]
    first, second, single = PretrainDataset(corpus, tokenizer, text_budget=200, halve_short=True).chunks()
    assert first["text_ids"] + second["text_ids"] == list(itertools.chain(*whole))  # nothing lost, order kept
    assert first["next_ids"] == second["text_ids"] and second["next_ids"] is None
    assert single["next_ids"] is None  # one sentence: nothing to cut
    kept = list(PretrainDataset(corpus, tokenizer, text_budget=200).chunks())  # the default: kept whole
    assert [r["text_ids"] for r in kept] == [list(itertools.chain(*whole)), single["text_ids"]]


def test_txt_corpus_chunks_and_next_targets(tmp_path, tokenizer):
    corpus = write(tmp_path / "c.txt", f"{DOC1}\n\n\n{DOC2[:40]}\n{DOC2[40:]}\n")
    docs = list(iter_documents(corpus))
    assert [d.line for d in docs] == [1, 4] and docs[1].text == f"{DOC2[:40]} {DOC2[40:]}".strip()
    data = PretrainDataset(corpus, tokenizer, text_budget=12)
    rows = list(data.chunks())
    assert all(1 <= len(r["text_ids"]) <= 12 for r in rows)
    # Consecutive chunks of one document: EBAR target = the next chunk; a document's last has none.
    lasts = [i for i, r in enumerate(rows) if r["next_ids"] is None]
    assert len(lasts) == 2 and lasts[-1] == len(rows) - 1
    whole = tokenizer(split_sentences(DOC1), add_special_tokens=False)["input_ids"]
    assert list(itertools.chain(*(r["text_ids"] for r in rows[: lasts[0] + 1]))) == list(itertools.chain(*whole))
    for i, r in enumerate(rows):
        assert r["own_ids"] == r["text_ids"]
        if r["next_ids"] is not None:
            assert r["next_ids"] == rows[i + 1]["text_ids"]


def test_jsonl_title_text_and_beir(tmp_path, tokenizer, arxiv_tagged_dir):
    corpus = jsonl(tmp_path / "c.jsonl", [{"title": "Dewey", "text": "A history."}, {"text": "Plain text."}])
    assert [d.text for d in iter_documents(corpus)] == ["Dewey A history.", "Plain text."]
    beir = arxiv_tagged_dir / "corpus.jsonl"
    assert count_documents(beir) == 314
    first = json.loads(beir.read_text().splitlines()[0])
    assert next(iter_documents(beir)).text == f"{first['title']} {first['text']}"


def test_reference_format_rows(tmp_path, tokenizer):
    rows = [
        {"input": "the library", "output_summarize": "the library", "output_predict": "the index"},
        {"input": "a model", "output_summarize": "a model", "output_predict": ""},
    ]
    data = PretrainDataset(jsonl(tmp_path / "r.jsonl", rows), tokenizer, text_budget=32)
    out = list(data.chunks())
    assert out[0]["next_ids"] == tokenizer("the index", add_special_tokens=False)["input_ids"]
    assert out[1]["next_ids"] is None and out[1]["own_ids"] == out[1]["text_ids"]


def test_order_is_deterministic_given_seed(tokenizer, arxiv_dir):
    def first(seed, n=30):
        data = PretrainDataset(arxiv_dir / "corpus.jsonl", tokenizer, 40, seed=seed, shuffle_buffer=64)
        return [tuple(r["text_ids"]) for r in itertools.islice(iter(data), n)]

    assert first(1) == first(1)
    assert first(1) != first(2)
    file_order = [
        tuple(r["text_ids"])
        for r in itertools.islice(PretrainDataset(arxiv_dir / "corpus.jsonl", tokenizer, 40).chunks(), 30)
    ]
    assert first(1) != file_order  # really shuffled


def test_stream_cycles_epochs(tmp_path, tokenizer):
    data = PretrainDataset(write(tmp_path / "c.txt", DOC2), tokenizer, text_budget=64, shuffle_buffer=4)
    assert len(list(itertools.islice(iter(data), 7))) == 7  # a 2-chunk corpus still feeds 7 steps


def test_empty_documents_are_left_out_and_counted(tmp_path):
    from llara.data.io import skip_bad_rows

    corpus = jsonl(tmp_path / "c.jsonl", [{"text": "ok."}, {"title": " ", "text": ""}, {"_id": 3, "text": None}])
    with skip_bad_rows() as tally:
        assert count_documents(corpus) == 1
        assert [d.text for d in iter_documents(corpus)] == ["ok."]  # a second pass counts nothing twice
    assert tally.count == 0 and tally.warnings() == [f"2 empty documents left out (first: {corpus}:2)"]


@pytest.mark.parametrize(
    "name, content, where",
    [
        ("empty.txt", "\n\n  \n", "empty.txt: empty corpus"),
        ("empty.jsonl", "\n", "empty.jsonl: empty corpus"),
        ("allempty.jsonl", '{"title": " ", "text": ""}\n{"text": null}\n', "allempty.jsonl: empty corpus"),
        ("notextfield.jsonl", '{"text": "ok"}\n{"title": "x"}\n', "notextfield.jsonl:2: field 'text'"),
        (
            "ref.jsonl",
            '{"input": "a", "output_summarize": "a", "output_predict": "b"}\n{"input": "a", "output_summarize": "a"}\n',
            "ref.jsonl:2: field 'output_predict': missing",
        ),
        ("bad.jsonl", '{"text": "ok"}\n{"text": \n', "bad.jsonl:2: malformed JSON"),
    ],
)
def test_bad_corpus_names_file_and_line(tmp_path, name, content, where):
    with pytest.raises(LlaraError) as e:
        count_documents(write(tmp_path / name, content))
    assert where in str(e.value)
