"""TREC run files: `qid Q0 docid rank score tag`, one line per retrieved document."""

from __future__ import annotations

from pathlib import Path

from llara.data.io import atomic_write, iter_lines, parse_score, skippable
from llara.errors import LlaraError

Run = dict[str, dict[str, float]]  # query id -> doc id -> score


def write_trec_run(path: str | Path, run: Run, tag: str = "llara") -> None:
    """Scores written exactly (shortest round-trip form), so the file ranks and scores as the run in
    memory did: rounding to a fixed number of decimals ties near-equal scores, which the file then
    orders by id, and a metric read back from the file drifts from the one computed in memory."""
    with atomic_write(path) as f:
        for qid, scores in run.items():
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    """A TREC run; a document listed twice for one query is an error (or skipped: --skip-bad-rows)."""
    run: Run = {}
    for line, text in iter_lines(path):
        if not text.strip():
            continue
        with skippable():
            parts = text.split()
            if len(parts) != 6:
                raise LlaraError(f"expected 6 columns (qid Q0 docid rank score tag), got {len(parts)}", path, line)
            qid, _, doc_id, _, score, _ = parts
            value = parse_score(score, path, line, "score")
            if doc_id in run.get(qid, {}):
                raise LlaraError(f"duplicate document {doc_id!r} for query {qid!r}", path, line, "docid")
            run.setdefault(qid, {})[doc_id] = value
    return run
