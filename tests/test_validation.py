"""The input-validation layer: file:line: field: reason errors, and `--skip-bad-rows` counting."""

import json

import numpy as np
import pytest

from llara.data.beir import load_beir, read_corpus, read_qrels, read_queries
from llara.data.io import (
    BadRows,
    bad_rows,
    check_finite,
    get_str_list,
    iter_jsonl,
    iter_lines,
    iter_records,
    skip_bad_rows,
)
from llara.errors import LlaraError
from llara.retrieval.runs import read_trec_run
from tests.conftest import run_cli, write_beir

CORPUS = [{"_id": "d1", "title": "T1", "text": "one"}, {"_id": "d2", "title": "", "text": "two"}]
QUERIES = [{"_id": "q1", "text": "first"}, {"_id": "q2", "text": "second"}]
QRELS = [("q1", "d1", 1), ("q2", "d2", 1)]


def planted_corpus(tmp_path):
    """Two good documents around five bad rows of different kinds."""
    p = tmp_path / "corpus.jsonl"
    p.write_bytes(
        b'{"_id": "d1", "text": "one"}\n'
        b'{"_id": "d2", "text": "bad \xff byte"}\n'  # not UTF-8
        b'{"_id": "d3", "text": \n'  # malformed JSON
        b'{"_id": "d1", "text": "again"}\n'  # duplicate id
        b'{"_id": "", "text": "no id"}\n'  # empty id
        b'{"_id": "d6", "text": "\\ud800"}\n'  # lone surrogate via a JSON escape
        b"\n"  # blank lines are not rows
        b'{"_id": "d7", "title": "T", "text": "seven"}\n'
    )
    return p


def test_strict_mode_stops_at_the_first_bad_row(tmp_path):
    with pytest.raises(LlaraError, match=r"corpus.jsonl:2: not valid UTF-8 \(byte 27\)"):
        read_corpus(planted_corpus(tmp_path))


def test_skip_mode_counts_every_bad_row_and_keeps_the_good_ones(tmp_path):
    path = planted_corpus(tmp_path)
    with skip_bad_rows() as tally:
        corpus = read_corpus(path)
    assert corpus == {"d1": {"title": "", "text": "one"}, "d7": {"title": "T", "text": "seven"}}
    assert tally.count == 5 and tally.by_file == {str(path): 5}
    assert tally.summary() == f"skipped 5 bad rows (first: {path}:2: not valid UTF-8 (byte 27))"
    assert [e.split(": ", 1)[0] for e in tally.examples] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "duplicate _id 'd1' (first on line 1)" in tally.examples[2]
    assert "field '_id': empty" in tally.examples[3]
    assert "field 'text': invalid Unicode: lone surrogate" in tally.examples[4]
    assert not bad_rows().skip  # the block restored the strict default


def test_file_level_errors_are_never_skipped(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "d1"}\n')  # the only row is bad, so the corpus ends up empty
    with skip_bad_rows() as tally, pytest.raises(LlaraError, match="corpus is empty"):
        read_corpus(p)
    assert tally.count == 1
    with skip_bad_rows(), pytest.raises(LlaraError, match="corpus file not found"):
        read_corpus(tmp_path / "missing.jsonl")


def test_skipped_rows_leave_every_judgement_in_place(tmp_path):
    corpus = CORPUS + [{"_id": "d2", "text": "duplicate"}, {"_id": "d3", "text": ""}, {"_id": "d4", "text": "\ud800"}]
    queries = QUERIES + [{"_id": "q3", "text": "   "}]
    qrels = QRELS + [("q1", "d3", 1), ("q3", "d1", 1), ("q9", "d1", 1), ("q2", "d2", 1), ("q1", "d4", 1)]
    folder = write_beir(tmp_path / "b", corpus, queries, qrels)
    with skip_bad_rows() as tally:
        data = load_beir(folder)
    # bad rows: the repeated d2 and d4's lone surrogate; the empty d3 and q3 are legal and kept
    assert tally.count == 2
    assert data.corpus["d2"]["text"] == "two" and data.corpus["d3"] == {"title": "", "text": ""}  # first d2 wins
    assert data.queries["q3"] == "   "
    # d4's judgement stays (relevant, never retrieved, as trec_eval would score it); q9 has no text to search
    assert data.qrels == {"q1": {"d1": 1, "d3": 1, "d4": 1}, "q2": {"d2": 1}, "q3": {"d1": 1}}
    qrels_path = folder / "qrels" / "test.tsv"
    assert tally.warnings() == [
        f"1 empty document kept (first: {folder / 'corpus.jsonl'}:4)",
        f"1 empty query kept (first: {folder / 'queries.jsonl'}:3)",
        f"1 judgement of a query not in the queries file left out (first: {qrels_path}:6)",
        f"1 judgement of a document not in the corpus kept: it counts as relevant and is never retrieved, as in "
        f"trec_eval (first: {qrels_path}:8)",
    ]


def test_ids_with_whitespace_are_refused(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "d1", "text": "x"}\n{"_id": "d 2", "text": "y"}\n')
    with pytest.raises(LlaraError, match=r"corpus.jsonl:2: field '_id': id 'd 2' contains whitespace"):
        read_corpus(p)


def test_a_file_read_twice_counts_its_bad_rows_once(tmp_path):
    path = planted_corpus(tmp_path)
    with skip_bad_rows() as tally:
        read_corpus(path)
        read_corpus(path)  # e.g. a validating pass, then the real one
    assert tally.count == 5


def test_queries_duplicate_names_first_line(tmp_path):
    p = tmp_path / "queries.jsonl"
    p.write_text('{"_id": 1, "text": "a"}\n{"_id": "1", "text": "b"}\n')  # numeric and string ids collide
    with pytest.raises(LlaraError, match=r"queries.jsonl:2: field '_id': duplicate _id '1' \(first on line 1\)"):
        read_queries(p)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "q1\td1\t1\nq1\td1\t2\n",
            r"test.tsv:2: field 'score': conflicting judgement for 'q1'/'d1': 2 here, 1 on line 1",
        ),
        ("q1\t\t1\n", r"test.tsv:1: field 'corpus-id': empty"),
        ("q1\td1\tnan\n", r"test.tsv:1: field 'score': not a finite number"),
        ("q1\td1\t0.5\n", r"test.tsv:1: field 'score': relevance must be an integer"),
        ("q1 d1\n", r"test.tsv:1: expected 3 tab-separated columns \(query-id, corpus-id, score\) or TREC's 4, got 2"),
        ("q1\td1\tx\n", r"test.tsv: no judgements \(line 1, read as a header, is the only row"),
        ("query-id\tcorpus-id\tscore\n", r"test.tsv: no judgements"),
    ],
)
def test_qrels_errors(tmp_path, text, message):
    p = tmp_path / "test.tsv"
    p.write_text(text)
    with pytest.raises(LlaraError, match=message):
        read_qrels(p)


def test_qrels_accepts_trec_format_repeats_and_a_byte_order_mark(tmp_path):
    p = tmp_path / "test.tsv"
    p.write_bytes("\ufeffquery-id\tcorpus-id\tscore\nq1\td1\t1\r\nq1\td1\t1\nq2\t0\td2\t-1\n".encode())
    assert read_qrels(p) == {"q1": {"d1": 1}, "q2": {"d2": -1}}


def test_run_file_errors_and_skipping(tmp_path):
    p = tmp_path / "run.trec"
    p.write_text("q1 Q0 d1 1 2.5 t\nq1 Q0 d1 2 1.0 t\nq1 Q0 d2 3 inf t\nq1 Q0 d3 4 t\nq2 Q0 d1 1 0.5 t\n")
    with pytest.raises(LlaraError, match=r"run.trec:2: field 'docid': duplicate document 'd1' for query 'q1'"):
        read_trec_run(p)
    with skip_bad_rows() as tally:
        assert read_trec_run(p) == {"q1": {"d1": 2.5}, "q2": {"d1": 0.5}}
    assert tally.count == 3 and "run.trec:3: field 'score': not a finite number" in tally.examples[1]


@pytest.mark.parametrize(
    "line, message",
    [
        ("[" * 100_000, "malformed JSON"),  # would be a RecursionError
        ('{"a": ' + "1" * 5000 + "}", "malformed JSON"),  # int() digit limit, a ValueError
        ("[1, 2]", "expected a JSON object, got list"),
        ('"text"', "expected a JSON object, got str"),
    ],
)
def test_jsonl_oddities_are_llara_errors(tmp_path, line, message):
    p = tmp_path / "x.jsonl"
    p.write_text('{"ok": 1}\n' + line + "\n")
    with pytest.raises(LlaraError, match=rf"x.jsonl:2: {message}"):
        list(iter_jsonl(p))


def test_iter_lines_skips_undecodable_lines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"ok\n\xc3\x28 bad\nfine\n")
    with skip_bad_rows() as tally:
        assert list(iter_lines(p)) == [(1, "ok\n"), (3, "fine\n")]
    assert tally.count == 1


def test_iter_records_parses_and_skips(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text('{"query": "a", "pos": ["p"]}\n{"query": "b", "pos": []}\n{"query": "c", "pos": "p2"}\n')

    def parse(row, path, line):
        return row["query"], get_str_list(row, "pos", path, line, allow_empty=False)

    with pytest.raises(LlaraError, match=r"train.jsonl:2: field 'pos': empty list"):
        list(iter_records(p, parse))
    with skip_bad_rows() as tally:
        assert list(iter_records(p, parse)) == [("a", ["p"]), ("c", ["p2"])]
    assert tally.summary().startswith("skipped 1 bad row (first: ")


def test_get_str_list_checks_items():
    with pytest.raises(LlaraError, match=r"f.jsonl:3: field 'neg': empty string at position 1"):
        get_str_list({"neg": ["a", " "]}, "neg", "f.jsonl", 3, allow_empty=False)
    with pytest.raises(LlaraError, match="lone surrogate"):
        get_str_list({"neg": ["a", "\udc80"]}, "neg", "f.jsonl", 3)
    assert get_str_list({}, "neg", "f.jsonl", 3) == []  # the old default: missing means none


def test_check_finite_names_the_first_bad_row():
    emb = np.zeros((5, 3), dtype=np.float32)
    check_finite(emb, "document embeddings")
    emb[3, 1], emb[4, 0] = np.nan, np.inf
    with pytest.raises(
        LlaraError, match=r"shard.npy: document embeddings contains NaN or inf in 2 row\(s\) \(first: row 3\)"
    ):
        check_finite(emb, "document embeddings", "shard.npy")
    with pytest.raises(LlaraError, match=r"first: row 2"):
        check_finite(np.array([0.0, 1.0, -np.inf]), "scores")


def test_bad_rows_policy_does_not_skip_errors_without_a_line():
    policy = BadRows(skip=True)
    with pytest.raises(LlaraError):
        policy.handle(LlaraError("no room", "x.jsonl"))
    policy.handle(LlaraError("bad", "x.jsonl", 4, "text"))
    assert policy.summary() == "skipped 1 bad row (first: x.jsonl:4: field 'text': bad)"


def test_truncation_is_counted(tiny_model_dir):
    from llara.inference.encoder import LlaraEncoder

    enc = LlaraEncoder.from_pretrained(tiny_model_dir, passage_max_length=40, precision="fp32")
    enc.encode(["short", "the retrieval " * 50, "model " * 60], side="passage")
    assert (enc.prompts.wrapped, enc.prompts.truncated) == (3, 2)


def test_cli_skip_bad_rows_reports_and_records(tmp_path):
    # "[/b]" would be rich markup: the messages must print it verbatim, not crash
    corpus = CORPUS + [{"_id": "[/b]", "text": "x"}, {"_id": "[/b]", "text": "dup"}]
    data = write_beir(tmp_path / "data", corpus, QUERIES, QRELS + [("q1", "d9", 1)])
    with open(data / "queries.jsonl", "ab") as f:
        f.write(b'{"_id": "q3", "text": "\xff"}\n')

    strict = run_cli("evaluate", "--method", "bm25", "--data", data, "--output", tmp_path / "strict")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert strict.stderr.strip().splitlines() == [
        f"error: {data / 'corpus.jsonl'}:4: field '_id': duplicate _id '[/b]' (first on line 3)"
    ]
    assert not (tmp_path / "strict").exists()

    res = run_cli("--skip-bad-rows", "evaluate", "--method", "bm25", "--data", data, "--output", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    unknown = "1 judgement of a document not in the corpus kept: it counts as relevant and is never retrieved, as in "
    unknown += f"trec_eval (first: {data / 'qrels' / 'test.tsv'}:4)"
    assert warnings == [
        f"warning: {unknown}",
        f"warning: skipped 2 bad rows (first: {data / 'corpus.jsonl'}:4: field '_id': duplicate _id '[/b]' (first "
        "on line 3))",
    ]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["info"]["skipped_rows"] == 2 and metrics["info"]["judgements"] == 3
    assert metrics["info"]["warnings"] == [unknown]


def test_nan_embeddings_stop_before_the_index(tmp_path):
    from llara.evaluation import evaluate_dense

    class NanEncoder:
        def encode_corpus(self, docs, **kw):
            out = np.ones((len(docs), 4), dtype=np.float32)
            out[1, 2] = np.nan
            return out

        def encode_documents(self, docs, **kw):
            from llara.modeling.prompts import Passages

            return self.encode_corpus(docs), Passages(["x"] * len(docs), list(range(len(docs))), len(docs))

        def encode_queries(self, queries, **kw):
            return np.ones((len(queries), 4), dtype=np.float32)

    data = load_beir(write_beir(tmp_path / "b", CORPUS, QUERIES, QRELS))
    with pytest.raises(LlaraError, match=r"document embeddings contains NaN or inf in 1 row\(s\) \(first: row 1\)"):
        evaluate_dense(NanEncoder(), data, show_progress_bar=False)


def test_llara_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(LlaraError("empty", "c.jsonl", 3, "text")))
    assert (err.message, err.path, err.line, err.field) == ("empty", "c.jsonl", 3, "text")
    assert str(err) == "c.jsonl:3: field 'text': empty"


def test_very_long_lines_are_read_whole(tmp_path):
    p = tmp_path / "corpus.jsonl"
    long_text = "retrieval \u00e9\x01\u2028 " * 400_000  # ~5 MB on one line, controls and a line separator inside
    p.write_text(json.dumps({"_id": 1, "text": long_text}, ensure_ascii=False) + "\n" + '{"_id": 2, "text": "b"}\n')
    corpus = read_corpus(p)
    assert corpus["1"]["text"] == long_text and corpus["2"]["text"] == "b"


def test_encode_streams_the_same_rows_as_read_corpus_and_honours_skipping(tiny_model_dir, tmp_path):
    from llara.inference.corpus import encode_corpus_file, open_embeddings
    from llara.inference.encoder import LlaraEncoder

    path = planted_corpus(tmp_path)
    enc = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")
    with pytest.raises(LlaraError, match=r"corpus.jsonl:2: not valid UTF-8"):
        encode_corpus_file(enc, path, tmp_path / "strict", show_progress_bar=False)
    assert not (tmp_path / "strict").exists()  # validation happens before anything is written
    with skip_bad_rows() as tally:
        encode_corpus_file(enc, path, tmp_path / "emb", chunk_size=1, show_progress_bar=False)
    assert tally.count == 5  # three passes over the file (scan, encode), each bad row counted once
    assert open_embeddings(tmp_path / "emb").ids() == ["d1", "d7"]


def test_pretraining_corpus_bad_rows_stop_or_are_skipped(tmp_path):
    from llara.training.pretrain.data import iter_documents

    text = tmp_path / "text.jsonl"
    text.write_text(
        '{"text": "one."}\n{"title": "no text field"}\n{"text": "  "}\n{"text": ["x"]}\n{"text": "five."}\n'
    )
    with pytest.raises(LlaraError, match=r"text.jsonl:2: field 'text': missing"):
        list(iter_documents(text))
    with skip_bad_rows() as tally:
        assert [(d.line, d.text) for d in iter_documents(text)] == [(1, "one."), (5, "five.")]
    assert tally.count == 2  # the empty row 3 is no error: left out and counted
    assert tally.warnings() == [f"1 empty document left out (first: {text}:3)"]

    ref = tmp_path / "ref.jsonl"
    ref.write_text(
        '{"input": "a", "output_summarize": "a", "output_predict": "b"}\n{"input": "c", "output_predict": "d"}\n'
    )
    with pytest.raises(LlaraError, match=r"ref.jsonl:2: field 'output_summarize': missing"):
        list(iter_documents(ref))
    with skip_bad_rows() as tally:
        assert [d.summarize for d in iter_documents(ref)] == ["a"]
    assert tally.count == 1
