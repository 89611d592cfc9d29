"""Real collections are not our fixtures: what BEIR, pyserini and trec_eval accept, llara reads.

Rows that cannot be used stop (file:line: field, exit 2) or are skipped under --skip-bad-rows; rows that
are merely odd are kept (or, for training, left out on purpose) with one warning line per kind; the
rest is accepted silently. See README "Errors" and src/llara/data/beir.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytrec_eval

from llara.data.beir import load_beir, read_corpus, read_qrels, read_queries
from llara.data.io import skip_bad_rows
from llara.errors import LlaraError
from llara.evaluation import evaluate_bm25, score_run
from llara.retrieval.bm25 import BM25
from tests.conftest import run_cli, write_beir

BOM = "\ufeff"

# A Cranfield-like collection: aerodynamics abstracts, numeric ids, two empty documents (as Cranfield has)
# of which one is judged relevant, and graded judgements with -1 for "of no interest".
DOCS = [
    (1, "experimental investigation of the aerodynamics of a wing in a slipstream",
     "an experimental study of a wing in a propeller slipstream was made to determine the spanwise "
     "distribution of the lift increase due to slipstream at different angles of attack of the wing"),
    (2, "simple shear flow past a flat plate in an incompressible fluid of small viscosity",
     "in the study of the viscous flow past a flat plate the boundary layer equations are solved"),
    (12, "heat transfer in the laminar boundary layer of a flat plate at high speed",
     "the heat transfer from a heated flat plate to a compressible laminar boundary layer is computed"),
    (29, "similarity laws for aeroelastic models of heated high speed aircraft",
     "similarity laws are derived for models that reproduce the aeroelastic and thermal behaviour of "
     "heated aircraft structures at high speed"),
    (471, "", ""),
    (51, "theory of the slipstream effect on wing lift",
     "a lifting line theory gives the lift of a wing immersed in the slipstream of a propeller"),
    (78, "buckling of heated cylindrical shells", "thermal buckling of thin cylindrical shells under axial heating"),
    (995, "", ""),
    (100, "supersonic flow about a cone", "the flow about a circular cone at supersonic speed and small yaw"),
    (184, "transition of the boundary layer on a heated plate",
     "the effect of surface heating on boundary layer transition is measured in a wind tunnel"),
]  # fmt: skip
QUERIES = [
    (1, "what similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft"),
    (2, "what are the structural and aeroelastic problems associated with flight of high speed aircraft"),
    (4, "what is the effect of a propeller slipstream on the lift of a wing"),
    (8, "how is heat transfer computed in a laminar boundary layer"),
    (9, "an unjudged query: not evaluated, as in BEIR"),
]
QRELS = [  # graded 1-4, and -1 for "of no interest"
    (1, 29, 2), (1, 471, 3), (1, 12, -1), (1, 184, 4),
    (2, 29, 1), (2, 78, 3),
    (4, 1, 2), (4, 51, 1), (4, 2, 0),
    (8, 12, 1), (8, 184, 3), (8, 995, -1),
]  # fmt: skip


def write_cranfield_like(folder):
    """The collection as a Windows exporter writes it: a UTF-8 byte-order mark on each file, CRLF line
    ends, a blank last line, numeric ids, and an extra "metadata" field."""
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": i, "title": t, "text": x, "metadata": {"source": "cranfield"}} for i, t, x in DOCS]
    files = {
        "corpus.jsonl": [json.dumps(r) for r in corpus],
        "queries.jsonl": [json.dumps({"_id": i, "text": t}) for i, t in QUERIES],
        "qrels/test.tsv": ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{s}" for q, d, s in QRELS)],
    }
    for name, lines in files.items():
        (folder / name).write_bytes((BOM + "\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
    return folder


def plain_qrels(path) -> dict[str, dict[str, int]]:
    """The judgements straight from the file, without llara's reader: every one of them."""
    rows = path.read_bytes().decode("utf-8-sig").splitlines()[1:]
    qrels: dict[str, dict[str, int]] = {}
    for row in filter(str.strip, rows):
        q, d, s = row.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    return qrels


def plain_run(path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for row in path.read_text().splitlines():
        q, _, d, _, score, _ = row.split()
        run.setdefault(q, {})[d] = float(score)
    return run


def pytrec_metrics(qrels, run) -> dict[str, float]:
    """An independent computation: pytrec_eval on the run file, averaged over every judged query (0 if
    it retrieved nothing). Runs here hold at most 10 documents, so RR@10 is plain reciprocal rank."""
    assert all(len(r) <= 10 for r in run.values())
    names = {"nDCG@10": "ndcg_cut_10", "RR@10": "recip_rank", "R@100": "recall_100", "R@1000": "recall_1000"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, set(names.values())).evaluate(run)
    return {ours: sum(per_query.get(q, {}).get(m, 0.0) for q in qrels) / len(qrels) for ours, m in names.items()}


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("method", ["bm25", "dense"])
def test_cranfield_like_collection_evaluates_with_every_judgement(method, tiny_model_dir, tmp_path):
    data = write_cranfield_like(tmp_path / "cranfield")
    out = tmp_path / "out"
    extra = ["--model", tiny_model_dir, "--precision", "fp32"] if method == "dense" else []
    res = run_cli("evaluate", "--method", method, "--data", data, "--output", out, *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    assert warning_lines(res.stderr) == [f"warning: 2 empty documents kept (first: {data / 'corpus.jsonl'}:5)"]

    metrics = json.loads((out / "metrics.json").read_text())
    qrels = plain_qrels(data / "qrels" / "test.tsv")
    assert len(qrels) == 4 and sum(map(len, qrels.values())) == len(QRELS)  # the unjudged query 9 is not there
    run = plain_run(out / "run.trec")
    expected = pytrec_metrics(qrels, run)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name
    info = metrics["info"]
    assert (info["documents"], info["queries"], info["judgements"]) == (len(DOCS), 4, len(QRELS))
    assert info["warnings"] == ["2 empty documents kept (first: " + str(data / "corpus.jsonl") + ":5)"]
    if method == "bm25":  # the judged empty document scores 0, so query 1 cannot reach full recall
        assert all("471" not in r and "995" not in r for r in run.values())
        assert expected["R@1000"] < 1
    else:  # the prompt alone still gets an embedding: every document is ranked, the empty ones too
        assert all(len(r) == len(DOCS) for r in run.values()) and expected["R@1000"] == 1


def test_encode_keeps_empty_documents_and_warns_once(tiny_model_dir, tmp_path):
    from llara.inference.corpus import open_embeddings
    from llara.inference.encoder import LlaraEncoder

    data = write_cranfield_like(tmp_path / "cranfield")
    args = ["--model", tiny_model_dir, "--precision", "fp32", "--corpus", data / "corpus.jsonl"]
    res = run_cli("encode", *args, "--output", tmp_path / "emb", "--docs-per-file", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    # the corpus is read three times (a check before loading the model, a scan, the chunks): one warning
    assert warning_lines(res.stderr) == [f"warning: 2 empty documents kept (first: {data / 'corpus.jsonl'}:5)"]
    emb = open_embeddings(tmp_path / "emb")
    assert emb.ids() == [str(d[0]) for d in DOCS]
    arrays = np.concatenate(list(emb.arrays()))
    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")
    prompt_alone = encoder.encode_corpus([{"title": "", "text": ""}])[0]
    assert np.allclose(arrays[4], prompt_alone, atol=1e-5) and np.allclose(arrays[7], prompt_alone, atol=1e-5)


# ------------------------------------------------------------------------------ accepted silently
def test_extra_fields_and_numeric_ids_are_accepted_silently(tmp_path):
    corpus = [{"_id": 17, "title": "T", "text": "x", "metadata": {"url": "u"}, "tags": ["a"]}]
    folder = write_beir(tmp_path / "b", corpus, [{"_id": 3, "text": "q", "lang": "en"}], [(3, 17, 1)])
    with skip_bad_rows(False) as tally:
        data = load_beir(folder)
    assert data.corpus == {"17": {"title": "T", "text": "x"}} and data.queries == {"3": "q"}
    assert data.qrels == {"3": {"17": 1}} and tally.warnings() == []


@pytest.mark.parametrize(
    "text",
    [
        "query-id\tcorpus-id\tscore\n3\t17\t1\n3\t5\t0\n",  # BEIR
        "query_id\tdoc_id\trelevance\n3\t17\t1\n3\t5\t0\n",  # another tool's header
        "3\t17\t1\n3\t5\t0\n",  # none
        "3\t0\t17\t1\n3\t0\t5\t0\n",  # TREC's 4 columns
        "3 0 17 1\n3 0 5 0\n",  # TREC's qrels as trec_eval reads them: spaces
        BOM + "query-id\tcorpus-id\tscore\r\n3\t17\t1\r\n3\t5\t0\r\n\r\n",  # a byte-order mark, CRLF, blank end
    ],
)
def test_qrels_layouts(tmp_path, text):
    path = tmp_path / "test.tsv"
    path.write_bytes(text.encode())
    assert read_qrels(path) == {"3": {"17": 1, "5": 0}}


def test_byte_order_marks_crlf_and_blank_lines_change_nothing(tmp_path):
    plain = load_beir(write_beir(tmp_path / "plain", [{"_id": 1, "text": "a"}], [{"_id": 2, "text": "b"}], [(2, 1, 1)]))
    windows = tmp_path / "windows"
    write_beir(windows, [{"_id": 1, "text": "a"}], [{"_id": 2, "text": "b"}], [(2, 1, 1)])
    for path in (windows / "corpus.jsonl", windows / "queries.jsonl", windows / "qrels" / "test.tsv"):
        path.write_bytes(BOM.encode() + path.read_bytes().replace(b"\n", b"\r\n") + b"\r\n  \r\n")
    with skip_bad_rows(False) as tally:
        data = load_beir(windows)
    assert (data.corpus, data.queries, data.qrels) == (plain.corpus, plain.queries, plain.qrels)
    assert tally.warnings() == [] and tally.count == 0


def test_queries_without_judgements_are_left_out_silently(tmp_path):
    queries = [{"_id": "q1", "text": "a"}, {"_id": "q2", "text": "b"}]
    folder = write_beir(tmp_path / "b", [{"_id": "d1", "text": "a"}], queries, [("q1", "d1", 1)])
    with skip_bad_rows(False) as tally:
        data = load_beir(folder)
    assert data.queries == {"q1": "a"} and data.stats["queries"] == 1 and tally.warnings() == []


def test_score_0_and_negative_judgements_are_non_relevant(tmp_path):
    corpus = [{"_id": f"d{i}", "text": f"library {w}"} for i, w in enumerate(["books", "catalogue", "shelves"])]
    queries = [{"_id": "q1", "text": "library books"}, {"_id": "q2", "text": "library shelves"}]
    qrels = [("q1", "d0", 1), ("q1", "d1", 0), ("q1", "d2", -1), ("q2", "d2", 0)]
    folder = write_beir(tmp_path / "b", corpus, queries, qrels)
    with skip_bad_rows(False) as tally:
        data = load_beir(folder)
    assert data.qrels == {"q1": {"d0": 1, "d1": 0, "d2": -1}, "q2": {"d2": 0}}  # every judgement kept
    # q2 has no relevant document: it stays in the mean and scores 0, as pytrec_eval (trec_eval) scores it
    assert tally.warnings() == [
        f"1 judged query with no relevant document: it scores 0, as in trec_eval (first: {folder}/qrels/test.tsv:5)"
    ]
    run = evaluate_bm25(data).run
    metrics = score_run(run, data.qrels)
    assert metrics == pytest.approx(pytrec_metrics(plain_qrels(folder / "qrels" / "test.tsv"), run), abs=1e-9)
    as_zero = {q: {d: max(r, 0) for d, r in j.items()} for q, j in data.qrels.items()}
    assert metrics == pytest.approx(score_run(run, as_zero), abs=1e-9)  # -1 counts exactly as 0
    assert metrics["R@100"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------- kept, warned
def test_a_judgement_of_an_unknown_document_is_kept_as_trec_eval_does(tmp_path):
    corpus = [{"_id": "d1", "text": "library books"}, {"_id": "d2", "text": "library shelves"}]
    qrels = [("q1", "d1", 1), ("q1", "gone", 1), ("q1", "gone2", 0)]
    folder = write_beir(tmp_path / "b", corpus, [{"_id": "q1", "text": "library books"}], qrels)
    res = run_cli("evaluate", "--method", "bm25", "--data", folder, "--output", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert warning_lines(res.stderr) == [
        "warning: 2 judgements of documents not in the corpus kept: they count as relevant and are never retrieved, "
        f"as in trec_eval (first: {folder / 'qrels' / 'test.tsv'}:3)"
    ]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = pytrec_metrics(plain_qrels(folder / "qrels" / "test.tsv"), plain_run(tmp_path / "out" / "run.trec"))
    assert metrics["R@100"] == pytest.approx(expected["R@100"]) == pytest.approx(0.5)
    assert metrics["nDCG@10"] == pytest.approx(expected["nDCG@10"])


def test_a_judgement_of_an_unknown_query_is_left_out_with_a_warning(tmp_path):
    corpus = [{"_id": "d1", "text": "a"}]
    folder = write_beir(tmp_path / "b", corpus, [{"_id": "q1", "text": "a"}], [("q1", "d1", 1), ("q7", "d1", 1)])
    with skip_bad_rows(False) as tally:
        data = load_beir(folder)
    assert data.qrels == {"q1": {"d1": 1}}
    assert tally.warnings() == [
        f"1 judgement of a query not in the queries file left out (first: {folder}/qrels/test.tsv:3)"
    ]


def test_empty_and_null_fields_read_as_empty_and_a_missing_text_field_stops(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "title": null, "text": "x"}\n{"_id": "b", "title": null, "text": null}\n')
    with skip_bad_rows(False) as tally:
        assert read_corpus(path) == {"a": {"title": "", "text": "x"}, "b": {"title": "", "text": ""}}
    assert tally.warnings() == [f"1 empty document kept (first: {path}:2)"]
    # no `text` field at all: a corpus in another schema (pyserini's "contents") would read as all empty
    path.write_text('{"_id": "a", "contents": "x"}\n')
    with pytest.raises(LlaraError, match=r"corpus.jsonl:1: field 'text': missing"):
        read_corpus(path)
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": ""}\n{"_id": "q2", "text": "b"}\n')
    with skip_bad_rows(False) as tally:
        assert read_queries(queries) == {"q1": "", "q2": "b"}
    assert tally.warnings() == [f"1 empty query kept (first: {queries}:1)"]


def test_bm25_keeps_empty_documents_in_line_and_survives_an_empty_corpus():
    bm25 = BM25(["a", "b", "c"], ["", "library books", ""])
    assert bm25.retriever.scores["num_docs"] == 3  # no row dropped, so ids stay aligned
    run = bm25.search(["q", "r"], ["books", "the"])
    assert list(run["q"]) == ["b"] and run["q"]["b"] > 0 and run["r"] == {}  # empty documents score 0: no hit
    assert BM25(["a", "b"], ["", "the of"]).search(["q"], ["library"]) == {"q": {}}  # bm25s alone would crash


# ------------------------------------------------------------------------------------ refused
UNUSABLE = [
    (b'{"_id": "d2", "text": \n', "corpus.jsonl:2: malformed JSON"),
    (b'{"title": "t", "text": "x"}\n', "corpus.jsonl:2: field '_id': missing"),
    (b'{"_id": "d1", "text": "again"}\n', "corpus.jsonl:2: field '_id': duplicate _id 'd1' (first on line 1)"),
    (b'{"_id": "d2", "text": "caf\xe9"}\n', "corpus.jsonl:2: not valid UTF-8 (byte 26)"),
    (b'{"_id": "d 2", "text": "x"}\n', "corpus.jsonl:2: field '_id': id 'd 2' contains whitespace"),
]


@pytest.mark.parametrize("row, message", UNUSABLE)
def test_rows_that_cannot_be_used_stop_with_file_line_and_exit_2(tmp_path, row, message):
    folder = write_beir(tmp_path / "b", [{"_id": "d1", "text": "a"}], [{"_id": "q1", "text": "a"}], [("q1", "d1", 1)])
    with open(folder / "corpus.jsonl", "ab") as f:
        f.write(row)
    res = run_cli("evaluate", "--method", "bm25", "--data", folder, "--output", tmp_path / "out")
    [line] = res.stderr.strip().splitlines()
    assert res.returncode == 2 and line.startswith(f"error: {folder}/{message}")
    assert not (tmp_path / "out").exists()


def test_rows_that_cannot_be_used_are_skipped_and_counted(tmp_path):
    folder = write_beir(tmp_path / "b", [{"_id": "d1", "text": "a"}], [{"_id": "q1", "text": "a"}], [("q1", "d1", 1)])
    with open(folder / "corpus.jsonl", "ab") as f:
        f.write(b"".join(row for row, _ in UNUSABLE))
    with skip_bad_rows() as tally:
        data = load_beir(folder)
    assert list(data.corpus) == ["d1"] and tally.count == len(UNUSABLE)
    assert [e.split(": ", 1)[0] for e in tally.examples] == [f"{folder}/corpus.jsonl:{n}" for n in range(2, 7)]


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_bytes('{"_id": "q1", "text": "a"}\n'.encode("utf-16"))
    with skip_bad_rows(), pytest.raises(LlaraError, match="UTF-16 text .* save the file as UTF-8"):
        read_queries(path)  # a whole file, never skipped row by row


# ------------------------------------------------------------------------ training leaves them out
def test_pairs_leaves_empty_documents_out_with_a_count(tmp_path):
    data = write_cranfield_like(tmp_path / "cranfield")
    out = tmp_path / "pairs.jsonl"
    res = run_cli("pairs", "--corpus", data / "corpus.jsonl", "--output", out, "--negatives", "3")
    assert res.returncode == 0, res.stderr
    assert warning_lines(res.stderr) == [f"warning: 2 empty documents left out (first: {data / 'corpus.jsonl'}:5)"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(DOCS) - 2
    assert not {"471", "995"} & ({r["doc_id"] for r in rows} | {n for r in rows for n in r["neg_ids"]})


def test_mine_never_uses_an_empty_document_or_query(tmp_path):
    from llara.training.finetune.data import read_train_file
    from llara.training.mining import mine

    data = write_cranfield_like(tmp_path / "cranfield")
    with open(data / "queries.jsonl", "ab") as f:
        f.write(b'{"_id": 10, "text": ""}\r\n')
    with open(data / "qrels" / "test.tsv", "ab") as f:
        f.write(b"10\t1\t1\r\n")
    out = tmp_path / "mined.jsonl"
    with skip_bad_rows(False) as tally:
        summary = mine("bm25", data, out, split="test", rank_range="0-10", negatives=5)
    rows = {r["query_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"1", "2", "4", "8"} and summary.rows == 4  # query 10 is empty
    assert rows["1"]["pos_ids"] == ["29", "184"]  # the judged empty 471 is no positive
    assert all(not {"471", "995"} & set(r["neg_ids"]) for r in rows.values())
    assert tally.warnings() == [
        f"2 empty documents left out (first: {data / 'corpus.jsonl'}:5)",
        f"1 empty query left out (first: {data / 'queries.jsonl'}:7)",  # after the blank line 6
    ]
    assert len(read_train_file(out)) == 4


def test_finetune_rows_with_empty_passages_keep_the_rest(tmp_path):
    from llara.training.finetune.data import read_train_file

    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "a", "pos": ["p", " "], "neg": ["", {"title": "", "text": ""}, "n"]}\n')
    with skip_bad_rows(False) as tally:
        [example] = read_train_file(path)
    assert (example.pos, example.neg) == (["p"], ["n"])
    assert tally.warnings() == [f"1 row with empty passages (left out of it) (first: {path}:1)"]
