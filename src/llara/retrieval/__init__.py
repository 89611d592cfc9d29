"""Search backends (FAISS, BM25) and TREC run files."""
