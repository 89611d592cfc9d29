"""BM25 with bm25s: lowercase, English stop words (the reference point of docs/method.md)."""

from __future__ import annotations

import bm25s

from llara.retrieval.runs import Run


class BM25:
    def __init__(self, doc_ids: list[str], texts: list[str], stopwords: str = "en") -> None:
        self.doc_ids = doc_ids
        self.stopwords = stopwords
        tokens = bm25s.tokenize(texts, stopwords=stopwords, show_progress=False)
        # An empty document (legal in BEIR) has no tokens: it keeps its row, so ids stay aligned, and
        # scores 0. A corpus with no token at all would crash bm25s: every query then finds nothing.
        self.retriever = None
        if tokens.vocab:
            self.retriever = bm25s.BM25()
            self.retriever.index(tokens, show_progress=False)

    @classmethod
    def from_corpus(cls, corpus: dict[str, dict[str, str]]) -> BM25:
        """Index a BEIR corpus (doc id -> {"title", "text"}) as `llara evaluate --method bm25` does."""
        from llara.data.beir import format_document

        return cls(list(corpus), [format_document(doc) for doc in corpus.values()])

    @classmethod
    def run(cls, corpus: dict[str, dict[str, str]], queries: dict[str, str], k: int = 1000) -> Run:
        """Index a BEIR corpus and search every query (id -> text): the top k of each."""
        return cls.from_corpus(corpus).search(list(queries), list(queries.values()), k=k)

    def search(self, query_ids: list[str], queries: list[str], k: int = 1000) -> Run:
        k = min(k, len(self.doc_ids))
        if self.retriever is None or k < 1:
            return {qid: {} for qid in query_ids}
        tokens = bm25s.tokenize(queries, stopwords=self.stopwords, show_progress=False)
        rows, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        run: Run = {}
        for qid, irow, srow in zip(query_ids, rows, scores, strict=True):
            # bm25s pads with score 0 when fewer than k documents share a term: those are not hits
            run[qid] = {self.doc_ids[j]: float(s) for j, s in zip(irow, srow, strict=True) if s > 0}
        return run
