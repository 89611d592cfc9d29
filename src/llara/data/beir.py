"""BEIR-layout datasets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, validated line by line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llara.data.io import get_str, iter_jsonl, iter_lines, parse_score, require_file
from llara.errors import LlaraError


@dataclass
class BeirDataset:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text (only queries that have judgements)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance
    path: Path | None = None
    split: str = "test"
    stats: dict[str, int] = field(default_factory=dict)


def read_corpus(path: str | Path) -> dict[str, dict[str, str]]:
    path = require_file(path, "corpus file")
    corpus: dict[str, dict[str, str]] = {}
    first_line: dict[str, int] = {}
    for line, row in iter_jsonl(path):
        doc_id = get_str(row, "_id", path, line)
        text = get_str(row, "text", path, line, allow_empty=True)
        title = get_str(row, "title", path, line, required=False)
        if not text.strip() and not title.strip():
            raise LlaraError("empty document (no text and no title)", path, line, "text")
        if doc_id in corpus:
            raise LlaraError(f"duplicate _id {doc_id!r} (first on line {first_line[doc_id]})", path, line, "_id")
        corpus[doc_id] = {"title": title, "text": text}
        first_line[doc_id] = line
    if not corpus:
        raise LlaraError("corpus is empty", path)
    return corpus


def read_queries(path: str | Path) -> dict[str, str]:
    path = require_file(path, "queries file")
    queries: dict[str, str] = {}
    for line, row in iter_jsonl(path):
        qid = get_str(row, "_id", path, line)
        if qid in queries:
            raise LlaraError(f"duplicate _id {qid!r}", path, line, "_id")
        queries[qid] = get_str(row, "text", path, line)
    if not queries:
        raise LlaraError("no queries", path)
    return queries


def read_qrels(path: str | Path, corpus: dict | None = None, queries: dict | None = None) -> dict[str, dict[str, int]]:
    """TSV `query-id corpus-id score`, header optional; ids checked against corpus and queries."""
    path = require_file(path, "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    for line, text in iter_lines(path):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        parts = text.split("\t")
        if line == 1 and parts[0] == "query-id":
            continue
        if len(parts) == 4:  # TREC qrels: qid iter docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise LlaraError(
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(parts)}", path, line
            )
        qid, doc_id, score = parts
        rel = parse_score(score, path, line, "score")
        if rel != int(rel):
            raise LlaraError(f"relevance must be an integer, got {score!r}", path, line, "score")
        if corpus is not None and doc_id not in corpus:
            raise LlaraError(f"unknown document {doc_id!r} (not in the corpus)", path, line, "corpus-id")
        if queries is not None and qid not in queries:
            raise LlaraError(f"unknown query {qid!r} (not in queries.jsonl)", path, line, "query-id")
        qrels.setdefault(qid, {})[doc_id] = int(rel)
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
