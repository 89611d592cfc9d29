"""BEIR-layout datasets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, validated line by line.

A bad row stops the load with file:line: field: reason, or, under `--skip-bad-rows`, is counted and
left out (a duplicate keeps its first occurrence; a judgement naming a left-out id is left out too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llara.data.io import get_str, iter_jsonl, iter_lines, iter_records, parse_score, require_file, skippable
from llara.errors import LlaraError

_SPACE = re.compile(r"\s")  # what str.split() splits on, so a TREC run could not hold the id


@dataclass
class BeirDataset:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text (only queries that have judgements)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance
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
    """(id, {"title", "text"}) of one corpus row; for streaming readers: iter_records(path, parse_document)."""
    doc_id = parse_id(row, path, line)
    text = get_str(row, "text", path, line, allow_empty=True)
    title = get_str(row, "title", path, line, required=False)
    if not text.strip() and not title.strip():
        raise LlaraError("empty document (no text and no title)", path, line, "text")
    return doc_id, {"title": title, "text": text}


def iter_corpus(path: str | Path) -> Iterator[tuple[int, str, dict[str, str]]]:
    """(line, id, {"title", "text"}) of each good corpus row, streaming (a corpus larger than memory).

    Bad rows and repeated ids stop the read or, under `--skip-bad-rows`, are counted and left out
    (a duplicate keeps its first occurrence); the same file always yields the same rows in the same
    order, which resumable encoding relies on. Only the ids are held in memory.
    """
    path = require_file(path, "corpus file")
    first_line: dict[str, int] = {}

    def parse(row: dict, path: Path, line: int) -> tuple[int, str, dict[str, str]]:
        doc_id, doc = parse_document(row, path, line)
        if doc_id in first_line:
            raise LlaraError(f"duplicate _id {doc_id!r} (first on line {first_line[doc_id]})", path, line, "_id")
        first_line[doc_id] = line
        return line, doc_id, doc

    yield from iter_records(path, parse)


def read_corpus(path: str | Path) -> dict[str, dict[str, str]]:
    corpus = {doc_id: doc for _, doc_id, doc in iter_corpus(path)}
    if not corpus:
        raise LlaraError("corpus is empty", path)
    return corpus


def read_queries(path: str | Path) -> dict[str, str]:
    path = require_file(path, "queries file")
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for line, row in iter_jsonl(path):
        with skippable():
            qid = parse_id(row, path, line)
            text = get_str(row, "text", path, line)
            if qid in queries:
                raise LlaraError(f"duplicate _id {qid!r} (first on line {first_line[qid]})", path, line, "_id")
            queries[qid] = text
            first_line[qid] = line
    if not queries:
        raise LlaraError("no queries", path)
    return queries


def _qrels_row(text: str, path: Path, line: int) -> tuple[str, str, int]:
    parts = text.split("\t")
    if len(parts) != 3 and len(text.split()) == 4:  # TREC qrels, often space-separated (ids hold no spaces)
        parts = text.split()
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


def read_qrels(path: str | Path, corpus: dict | None = None, queries: dict | None = None) -> dict[str, dict[str, int]]:
    """TSV `query-id corpus-id score` (or TREC's 4 columns), header optional; ids checked against
    corpus and queries when given. A repeated judgement must agree with the first."""
    path = require_file(path, "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for line, text in iter_lines(path):
        text = text.rstrip("\r\n")
        if not text.strip() or (line == 1 and text.split("\t")[0] == "query-id"):
            continue
        with skippable():
            qid, doc_id, rel = _qrels_row(text, path, line)
            if corpus is not None and doc_id not in corpus:
                raise LlaraError(f"unknown document {doc_id!r} (not in the corpus)", path, line, "corpus-id")
            if queries is not None and qid not in queries:
                raise LlaraError(f"unknown query {qid!r} (not in the queries file)", path, line, "query-id")
            seen = qrels.get(qid, {}).get(doc_id)
            if seen is not None and seen != rel:
                raise LlaraError(
                    f"conflicting judgement for {qid!r}/{doc_id!r}: {rel} here, {seen} on line "
                    f"{first_line[qid, doc_id]}",
                    path,
                    line,
                    "score",
                )
            qrels.setdefault(qid, {})[doc_id] = rel
            first_line.setdefault((qid, doc_id), line)
    if not qrels:
        raise LlaraError("no judgements", path)
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise LlaraError(
            "dataset folder not found (expected BEIR layout: corpus.jsonl, queries.jsonl, qrels/<split>.tsv)", folder
        )
    corpus = read_corpus(folder / "corpus.jsonl")
    all_queries = read_queries(folder / "queries.jsonl")
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv", corpus, all_queries)
    queries = {qid: all_queries[qid] for qid in all_queries if qid in qrels}
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
