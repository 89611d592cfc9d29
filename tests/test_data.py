import json

import pytest

from llara.data.beir import load_beir
from llara.data.io import atomic_write, iter_jsonl
from llara.errors import LlaraError
from tests.conftest import write_beir

CORPUS = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]
QUERIES = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}]
QRELS = [("q1", "d1", 1), ("q2", "d2", 1)]


def test_valid_folder_loads(tmp_path):
    data = load_beir(write_beir(tmp_path / "ok", CORPUS, QUERIES, QRELS))
    assert data.stats == {"documents": 2, "queries": 2, "judgements": 2}
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_real_arxiv_loads(arxiv_dir, arxiv_tagged_dir):
    data = load_beir(arxiv_dir)
    assert data.stats == {"documents": 314, "queries": 314, "judgements": 314}
    assert [len(load_beir(arxiv_dir, split).queries) for split in ("train", "dev")] == [104, 210]
    tagged = load_beir(arxiv_tagged_dir)
    assert tagged.stats == {"documents": 314, "queries": 22, "judgements": 185}
    assert all(doc["title"] and doc["text"] for doc in tagged.corpus.values())


def test_numeric_ids_are_accepted_as_strings(tmp_path):
    data = load_beir(write_beir(tmp_path / "n", [{"_id": 7, "text": "x"}], [{"_id": 1, "text": "q"}], [("1", "7", 1)]))
    assert list(data.corpus) == ["7"]


@pytest.mark.parametrize(
    "corpus, queries, qrels, where, message",
    [
        (CORPUS + [{"_id": "d1", "text": "again"}], QUERIES, QRELS, "corpus.jsonl:3", "duplicate _id"),
        ([{"title": "x", "text": "y"}], QUERIES, QRELS, "corpus.jsonl:1", "field '_id': missing"),
        ([{"_id": "d1", "title": "x"}], QUERIES, QRELS, "corpus.jsonl:1", "field 'text': missing"),
        ([{"_id": "d1", "text": 3.5}], QUERIES, QRELS, "corpus.jsonl:1", "expected a string"),
        (CORPUS, [{"_id": "q1"}], QRELS, "queries.jsonl:1", "field 'text': missing"),
        ([{"_id": 1.5, "text": "x"}], QUERIES, QRELS, "corpus.jsonl:1", "field '_id': expected a string, got float"),
        (CORPUS, QUERIES, [("q7", "d1", 1)], "test.tsv", "no judgements of queries in the queries file"),
        (CORPUS, QUERIES, [("q1", "d1", "x")], "test.tsv:2", "not a number"),
        ([], QUERIES, QRELS, "corpus.jsonl", "corpus is empty"),
    ],
)
def test_bad_input_names_file_line_and_problem(tmp_path, corpus, queries, qrels, where, message):
    folder = write_beir(tmp_path / "bad", corpus, queries, qrels)
    with pytest.raises(LlaraError) as err:
        load_beir(folder)
    assert where in str(err.value) and message in str(err.value)


def test_malformed_json_line(tmp_path):
    folder = write_beir(tmp_path / "bad", CORPUS, QUERIES, QRELS)
    with open(folder / "corpus.jsonl", "a") as f:
        f.write('{"_id": "d3", "text": \n')
    with pytest.raises(LlaraError, match=r"corpus.jsonl:3: malformed JSON"):
        load_beir(folder)


def test_non_utf8_bytes_name_their_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": "ok"}\n{"a": "\xff"}\n')
    with pytest.raises(LlaraError, match=r"x.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(p))


def test_missing_files(tmp_path):
    with pytest.raises(LlaraError, match="dataset folder not found"):
        load_beir(tmp_path / "nope")
    folder = write_beir(tmp_path / "f", CORPUS, QUERIES, QRELS)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(LlaraError, match="qrels file not found"):
        load_beir(folder)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as f:
        json.dump({"a": 1}, f)
    assert json.loads(target.read_text()) == {"a": 1} and len(list(tmp_path.iterdir())) == 1
