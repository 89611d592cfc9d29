"""Shared fixtures: tiny random LLaMA-family models built in code, and real data from the `cherche` pip
package (314 arXiv papers), which the README's test command installs: nothing outside the repository."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from llara.testing import WORDS, make_tiny_model, make_tokenizer  # noqa: F401 (tests import them from here)

# Topical Semanlink tags of the arXiv papers (people, labs, venues and "Good" left out), most-used first.
# Each is a query (its label); the papers its curator tagged with it are the relevant documents: several
# per query, as in a classic test collection.
ARXIV_TAGS = (
    "named_entity_recognition",
    "knowledge_graph_embeddings",
    "word_embedding",
    "knowledge_distillation",
    "nlp_text_classification",
    "question_answering",
    "entity_linking",
    "sentence_embeddings",
    "graph_neural_networks",
    "transfer_learning",
    "bert",
    "attention_is_all_you_need",
    "language_model",
    "knowledge_graph_completion",
    "graph_embeddings",
    "pre_trained_language_models",
    "entity_embeddings",
    "deep_learning_attention",
    "low_resource_languages",
    "cross_lingual_nlp",
    "open_domain_question_answering",
    "neural_models_for_information_retrieval",
)
TAG_URI = "http://www.semanlink.net/tag/"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


class BagOfWords:
    """A stand-in encoder: L2-normalised counts of WORDS (lower-cased, full stops dropped); no model, instant."""

    def _embed(self, texts):
        import numpy as np

        emb = np.zeros((len(texts), len(WORDS)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().replace(".", " ").split():
                if w in WORDS:
                    emb[i, WORDS.index(w)] += 1
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-9)

    def encode_corpus(self, docs, **kwargs):
        return self._embed([f"{d['title']} {d['text']}" for d in docs])

    def passages(self, docs, long_documents="split", max_length=None):
        from llara.modeling.prompts import Passages

        return Passages([f"{d['title']} {d['text']}" for d in docs], list(range(len(docs))), len(docs))  # all fit

    def encode_documents(self, docs, long_documents="split", **kwargs):
        return self.encode_corpus(docs), self.passages(docs)

    def encode_queries(self, queries, **kwargs):
        return self._embed(list(queries))


def write_beir(folder: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> Path:
    """Write a small BEIR folder; rows are written verbatim so tests can plant bad input."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return folder


@functools.cache
def arxiv_data() -> tuple[list[dict], dict[str, str]]:
    """The papers (llara.data.arxiv.arxiv_papers) and each tag's label, read once per session."""
    from llara.data.arxiv import _cherche_file, arxiv_papers
    from llara.errors import LlaraError

    try:
        papers = arxiv_papers()
        tags = json.loads(_cherche_file("tags.json").read_text(encoding="utf-8"))
    except LlaraError as e:  # the README's test command installs it: say so instead of erroring each test
        pytest.fail(f"real test data missing: {e}")
    return papers, {uri: row["prefLabel"][0] for uri, row in tags.items() if row.get("prefLabel")}


def write_arxiv_tagged(folder: Path, n_queries: int = len(ARXIV_TAGS), n_others: int | None = None) -> Path:
    """A BEIR folder of real text and real judgements: documents = arXiv papers (title + abstract),
    queries = the labels of the first `n_queries` ARXIV_TAGS, relevant = the papers tagged with each.
    n_others=None keeps every paper in the package's order; a number keeps the judged papers and that
    many others."""
    papers, labels = arxiv_data()
    tags = ARXIV_TAGS[:n_queries]
    qrels = [(tag, p["id"], 1) for tag in tags for p in papers if TAG_URI + tag in p["tags"]]
    judged = {d for _, d, _ in qrels}
    if n_others is not None:
        papers = [p for p in papers if p["id"] in judged] + [p for p in papers if p["id"] not in judged][:n_others]
    corpus = [{"_id": p["id"], "title": p["title"], "text": p["abstract"]} for p in papers]
    return write_beir(folder, corpus, [{"_id": t, "text": labels[TAG_URI + t]} for t in tags], qrels)


@pytest.fixture(scope="session")
def arxiv_dir(tmp_path_factory) -> Path:
    """The demo's collection (llara.data.arxiv.write_arxiv_beir): 314 titles, each judging its abstract."""
    from llara.data.arxiv import write_arxiv_beir

    arxiv_data()  # a clear failure if cherche is missing
    return write_arxiv_beir(tmp_path_factory.mktemp("arxiv") / "arxiv")


@pytest.fixture(scope="session")
def arxiv_tagged_dir(tmp_path_factory) -> Path:
    """All 314 papers with titles, 22 topical tag queries with several relevant papers each."""
    return write_arxiv_tagged(tmp_path_factory.mktemp("arxiv-tagged"))


@pytest.fixture
def arxiv_subset(tmp_path) -> Path:
    """10 tag queries, their judged papers plus 100 others: real text, small enough to encode."""
    return write_arxiv_tagged(tmp_path / "arxiv-small", n_queries=10, n_others=100)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Each test session converts the built-in model into its own cache, as a fresh machine would."""
    import os

    old = os.environ.get("LLARA_CACHE")
    os.environ["LLARA_CACHE"] = str(tmp_path_factory.mktemp("llara-cache"))
    yield
    if old is None:
        os.environ.pop("LLARA_CACHE", None)
    else:
        os.environ["LLARA_CACHE"] = old


@pytest.fixture(scope="session")
def smollm2_dir(isolated_cache) -> Path:
    from llara.modeling.loading import resolve_model

    return resolve_model("smollm2")


def run_cli(*args: str, timeout: int = 900):
    """Run `python -m llara ...` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "llara", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def failure(stderr: str) -> str:
    """What a failed (multi-process) run said: every rank's error lines, then the end of its output."""
    import re

    errors = [line for line in stderr.splitlines() if re.search(r"Error|error:|Abort|terminate", line)]
    return "\n".join(errors[:40]) + "\n...\n" + stderr[-3000:]


def require_deepspeed() -> None:
    """DeepSpeed is part of the test install; a test that needs it fails (never skips) without it."""
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        pytest.fail('DeepSpeed is part of the test install: pip install -e ".[test]" (or ".[deepspeed]")')
