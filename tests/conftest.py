"""Shared fixtures: tiny random LLaMA-family models built in code, real data from ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llara.testing import WORDS, make_tiny_model, make_tokenizer  # noqa: F401 (tests import them from here)

ROOT = Path(__file__).resolve().parents[1]
CISI = ROOT.parent / "shared" / "data" / "cisi"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def cisi_dir() -> Path:
    if not (CISI / "corpus.jsonl").is_file():
        pytest.fail(f"real test data missing: {CISI} (the project's ../shared/data)")
    return CISI


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


@pytest.fixture
def cisi_subset(tmp_path, cisi_dir) -> Path:
    """The first 40 CISI queries' judged documents plus 200 others: real text, small enough to encode."""
    corpus = [json.loads(line) for line in (cisi_dir / "corpus.jsonl").open()]
    queries = [json.loads(line) for line in (cisi_dir / "queries.jsonl").open()][:10]
    qids = {q["_id"] for q in queries}
    rows = [line.rstrip("\n").split("\t") for line in (cisi_dir / "qrels" / "test.tsv").open()][1:]
    rows = [(q, d, int(s)) for q, d, s in rows if q in qids]
    judged = {d for _, d, _ in rows}
    keep = [c for c in corpus if c["_id"] in judged] + [c for c in corpus if c["_id"] not in judged][:100]
    return write_beir(tmp_path / "cisi-small", keep, queries, rows)


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
    from llara.models import resolve_model

    return resolve_model("smollm2")


def run_cli(*args: str, timeout: int = 900):
    """Run `python -m llara ...` as a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "llara", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
