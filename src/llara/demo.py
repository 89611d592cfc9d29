"""`llara demo`: the pipeline end to end on data that ships in pip packages."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from llara.data.beir import load_beir
from llara.data.io import atomic_write, write_json
from llara.datasets import write_arxiv_beir
from llara.evaluation import evaluate_bm25, evaluate_dense

COLUMNS = ["nDCG@10", "R@100", "minutes"]


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, r in rows.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{r[c]:.3f}" if c != "minutes" else f"{r[c]:.1f}" for c in COLUMNS) + " |"
        )
    return "\n".join(lines) + "\n"


def run_demo(output: Path, quick: bool = False, model: str = "smollm2") -> dict:
    from llara.cli import metrics_table
    from llara.encoder import LlaraEncoder

    console = Console()
    data = load_beir(write_arxiv_beir(output / "data" / "arxiv"))
    console.print(
        f"[bold]llara demo[/]: arXiv titles -> abstracts, {data.stats['documents']} papers "
        f"({'quick' if quick else 'full'} run)"
    )
    rows: dict[str, dict[str, float]] = {}

    t = time.perf_counter()
    bm25 = evaluate_bm25(data)
    rows["BM25"] = {**bm25.metrics, "minutes": (time.perf_counter() - t) / 60}

    t = time.perf_counter()
    encoder = LlaraEncoder.from_pretrained(model, recipe="reference", passage_max_length=128 if quick else 256)
    raw = evaluate_dense(encoder, data)
    rows[f"{model}, no adaptation"] = {**raw.metrics, "minutes": (time.perf_counter() - t) / 60}

    write_json(output / "results.json", rows)
    with atomic_write(output / "results.md") as f:
        f.write(markdown_table(rows))
    console.print(metrics_table("llara demo: arXiv titles -> abstracts", rows, COLUMNS))
    console.print(f"results in {output / 'results.json'} and {output / 'results.md'}")
    return rows
