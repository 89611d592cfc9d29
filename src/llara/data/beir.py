"""BEIR-layout datasets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, validated line by line.

Each rule asks what BEIR, pyserini and trec_eval do with the row (README "Errors"):

- refused (file:line: field, exit 2; counted and left out under `--skip-bad-rows`): rows that cannot be
  used. Malformed JSON, non-UTF-8 bytes, a missing, empty or repeated `_id`, an id with whitespace (a
  TREC run cannot hold it), a row without a `text` field (a corpus in another schema, e.g. pyserini's
  `contents`, would otherwise read as empty documents), a field of the wrong type, a judgement with an
  empty id, a non-integer score, a repeated judgement that disagrees.
- kept, one warning line per kind: empty documents and queries (legal in BEIR; retrieval keeps them,
  training leaves them out); judgements of documents not in the corpus (as trec_eval: they count as
  relevant and are never retrieved); judged queries with no relevant document (they score 0, as in
  trec_eval).
- left out, one warning line: judgements of queries not in the queries file (nothing to retrieve with;
  trec_eval without -c ignores them too).
- accepted silently: extra fields, numeric ids (`17` reads as "17"), `null` for an empty title or text,
  qrels with or without a header line, TREC's 4-column qrels, a UTF-8 byte-order mark, CRLF line ends,
  blank lines, score 0 and negative scores (non-relevant, as trec_eval), queries without judgements
  (not evaluated, as in BEIR).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llara.data.io import (
    Odd,
    bad_rows,
    get_str,
    iter_jsonl,
    iter_lines,
    iter_records,
    parse_score,
    require_file,
    skippable,
)
from llara.errors import LlaraError

_SPACE = re.compile(r"\s")  # what str.split() splits on, so a TREC run could not hold the id

EMPTY_DOC_KEPT: Odd = ("empty document kept", "empty documents kept")
EMPTY_DOC_LEFT_OUT: Odd = ("empty document left out", "empty documents left out")
EMPTY_QUERY_KEPT: Odd = ("empty query kept", "empty queries kept")
EMPTY_QUERY_LEFT_OUT: Odd = ("empty query left out", "empty queries left out")
UNKNOWN_DOC: Odd = (
    "judgement of a document not in the corpus kept: it counts as relevant and is never retrieved, as in trec_eval",
    "judgements of documents not in the corpus kept: they count as relevant and are never retrieved, as in trec_eval",
)
UNKNOWN_QUERY: Odd = (
    "judgement of a query not in the queries file left out",
    "judgements of queries not in the queries file left out",
)
NO_RELEVANT: Odd = (
    "judged query with no relevant document: it scores 0, as in trec_eval",
    "judged queries with no relevant document: they score 0, as in trec_eval",
)


@dataclass
class BeirDataset:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text (only queries that have judgements)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance (may name documents not in corpus)
    path: Path | None = None
    split: str = "test"
    stats: dict[str, int] = field(default_factory=dict)


def parse_id(row: dict, path: Path, line: int) -> str:
    """An `_id`: a non-empty string (or number) without whitespace, which a TREC run could not hold."""
    value = get_str(row, "_id", path, line)
    if _SPACE.search(value):
        raise LlaraError(f"id {value!r} contains whitespace (a TREC run cannot hold it)", path, line, "_id")
    return value


def parse_document(row: dict, path: Path, line: int) -> tuple[str, dict[str, str]]:
    """(id, {"title", "text"}) of one corpus row; for streaming readers: iter_records(path, parse_document).
    Title and text may both be empty: BEIR allows it, and real collections (Cranfield) have such rows."""
    doc_id = parse_id(row, path, line)
    text = get_str(row, "text", path, line, allow_empty=True)
    title = get_str(row, "title", path, line, required=False)
    return doc_id, {"title": title, "text": text}


def is_empty(doc: dict[str, str]) -> bool:
    """Neither title nor text (whitespace counts as nothing)."""
    return not (doc["title"].strip() or doc["text"].strip())


def iter_corpus(
    path: str | Path, keep_empty: bool = True, left_out: set[str] | None = None
) -> Iterator[tuple[int, str, dict[str, str]]]:
    """(line, id, {"title", "text"}) of each good corpus row, streaming (a corpus larger than memory).

    Bad rows and repeated ids stop the read or, under `--skip-bad-rows`, are counted and left out
    (a duplicate keeps its first occurrence); the same file always yields the same rows in the same
    order, which resumable encoding relies on. Only the ids are held in memory. Empty documents are
    kept (retrieval: the prompt alone gets an embedding, BM25 scores them 0) or, keep_empty=False
    (training), left out and their ids added to `left_out`; either way one warning counts them.
    """
    path = require_file(path, "corpus file")
    first_line: dict[str, int] = {}

    def parse(row: dict, path: Path, line: int) -> tuple[int, str, dict[str, str]]:
        doc_id, doc = parse_document(row, path, line)
        if doc_id in first_line:
            raise LlaraError(f"duplicate _id {doc_id!r} (first on line {first_line[doc_id]})", path, line, "_id")
        first_line[doc_id] = line
        return line, doc_id, doc

    for line, doc_id, doc in iter_records(path, parse):
        if is_empty(doc):
            bad_rows().note(EMPTY_DOC_KEPT if keep_empty else EMPTY_DOC_LEFT_OUT, path, line)
            if not keep_empty:
                if left_out is not None:
                    left_out.add(doc_id)
                continue
        yield line, doc_id, doc


def read_corpus(
    path: str | Path, keep_empty: bool = True, left_out: set[str] | None = None
) -> dict[str, dict[str, str]]:
    corpus = {doc_id: doc for _, doc_id, doc in iter_corpus(path, keep_empty, left_out)}
    if not corpus:
        raise LlaraError("corpus is empty", path)
    return corpus


def read_queries(path: str | Path, keep_empty: bool = True, left_out: set[str] | None = None) -> dict[str, str]:
    """Query id -> text. An empty query is kept (it retrieves nothing with BM25) or, keep_empty=False,
    left out with its id added to `left_out`; either way one warning counts them."""
    path = require_file(path, "queries file")
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, row in iter_jsonl(path):
        with skippable():
            qid = parse_id(row, path, line)
            text = get_str(row, "text", path, line, allow_empty=True)
            if qid in first_line:
                raise LlaraError(f"duplicate _id {qid!r} (first on line {first_line[qid]})", path, line, "_id")
            first_line[qid] = line
            if not text.strip():
                bad_rows().note(EMPTY_QUERY_KEPT if keep_empty else EMPTY_QUERY_LEFT_OUT, path, line)
                if not keep_empty:
                    if left_out is not None:
                        left_out.add(qid)
                    continue
            queries[qid] = text
    if not queries:
        raise LlaraError("no queries", path)
    return queries


def _columns(text: str) -> list[str]:
    # BEIR writes tabs; trec_eval reads any whitespace (ids cannot hold it), so a line without a tab splits there
    return text.split("\t") if "\t" in text else text.split()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _qrels_row(text: str, path: Path, line: int) -> tuple[str, str, int]:
    parts = _columns(text)
    if len(parts) == 4:  # TREC qrels: qid iter docid rel
        parts = [parts[0], parts[2], parts[3]]
    if len(parts) != 3:
        raise LlaraError(
            f"expected 3 tab-separated columns (query-id, corpus-id, score) or TREC's 4, got {len(parts)}", path, line
        )
    qid, doc_id, score = parts
    for name, value in (("query-id", qid), ("corpus-id", doc_id)):
        if not value.strip():
            raise LlaraError("empty", path, line, name)
    rel = parse_score(score, path, line, "score")
    if rel != int(rel):
        raise LlaraError(f"relevance must be an integer, got {score!r}", path, line, "score")
    return qid, doc_id, int(rel)


def read_qrels(
    path: str | Path,
    corpus: Collection[str] | None = None,
    queries: Collection[str] | None = None,
    dropped_docs: Collection[str] = (),
    dropped_queries: Collection[str] = (),
    warn_no_relevant: bool = True,
) -> dict[str, dict[str, int]]:
    """TSV `query-id corpus-id score` (or TREC's 4 columns), header optional; ids checked against
    corpus and queries when given. A repeated judgement must agree with the first.

    A judgement of a document not in the corpus is kept (trec_eval counts it as relevant, never
    retrieved); one of a query not in `queries` is left out (nothing to retrieve with); both are
    counted in a warning. Judgements of ids in `dropped_docs`/`dropped_queries` (empty rows a
    training command left out, already counted) go silently with them.
    """
    path = require_file(path, "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    first_row, header, rows = True, None, 0
    for line, text in iter_lines(path):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        if first_row:
            first_row = False
            parts = _columns(text)
            if len(parts) in (3, 4) and not _is_number(parts[-1]):  # a header (BEIR's loader always skips line 1)
                header = line
                continue
        with skippable():
            qid, doc_id, rel = _qrels_row(text, path, line)
            rows += 1
            if doc_id in dropped_docs or qid in dropped_queries:
                continue
            if queries is not None and qid not in queries:
                bad_rows().note(UNKNOWN_QUERY, path, line)
                continue
            seen = qrels.get(qid, {}).get(doc_id)
            if seen is not None and seen != rel:
                raise LlaraError(
                    f"conflicting judgement for {qid!r}/{doc_id!r}: {rel} here, {seen} on line "
                    f"{first_line[qid, doc_id]}",
                    path,
                    line,
                    "score",
                )
            if corpus is not None and doc_id not in corpus:
                bad_rows().note(UNKNOWN_DOC, path, line)
            qrels.setdefault(qid, {})[doc_id] = rel
            first_line.setdefault((qid, doc_id), line)
    if not qrels:
        why = " of queries in the queries file" if rows else ""
        if not rows and header:
            why = f" (line {header}, read as a header, is the only row: its score column is not a number)"
        raise LlaraError("no judgements" + why, path)
    if warn_no_relevant:
        for qid, judged in qrels.items():
            if max(judged.values()) <= 0:
                bad_rows().note(NO_RELEVANT, path, min(first_line[qid, d] for d in judged))
    return qrels


def load_beir(folder: str | Path, split: str = "test", training: bool = False) -> BeirDataset:
    """A BEIR folder, every row validated. `training=True` (`llara mine`) leaves empty documents and
    queries out, with their judgements, and leaves queries without a relevant judgement to the caller."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LlaraError(
            "dataset folder not found (expected BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)", folder
        )
    dropped_docs: set[str] = set()
    dropped_queries: set[str] = set()
    corpus = read_corpus(folder / "corpus.jsonl", not training, dropped_docs)
    all_queries = read_queries(folder / "queries.jsonl", not training, dropped_queries)
    qrels = read_qrels(
        folder / "qrels" / f"{split}.tsv", corpus, all_queries, dropped_docs, dropped_queries, not training
    )
    queries = {qid: all_queries[qid] for qid in all_queries if qid in qrels}  # unjudged queries: not evaluated
    stats = {"documents": len(corpus), "queries": len(queries), "judgements": sum(len(v) for v in qrels.values())}
    return BeirDataset(corpus, queries, qrels, folder, split, stats)


def load_split(data: BeirDataset, split: str) -> BeirDataset:
    """Another split of a loaded dataset: its judged queries and qrels, the corpus shared, not read again."""
    if data.path is None:
        raise LlaraError(f"no dataset folder to read qrels/{split}.tsv from")
    all_queries = read_queries(data.path / "queries.jsonl")
    qrels = read_qrels(data.path / "qrels" / f"{split}.tsv", data.corpus, all_queries)
    queries = {qid: all_queries[qid] for qid in all_queries if qid in qrels}
    stats = {"documents": len(data.corpus), "queries": len(queries), "judgements": sum(map(len, qrels.values()))}
    return BeirDataset(data.corpus, queries, qrels, data.path, split, stats)


def format_document(doc: dict | str) -> str:
    """A corpus document as text: BEIR's title + text, or the string itself."""
    if isinstance(doc, str):
        return doc
    title, text = (doc.get("title") or "").strip(), (doc.get("text") or "").strip()
    return f"{title} {text}" if title else text
