"""Estimated vs measured activation memory of a training step (the calibration of llara.training.memory).

Each configuration runs `llara finetune` (or `llara pretrain`) for one step in a fresh process and
records its peak RSS; a near-empty step gives the baseline (model, libraries), so
measured activations = peak - baseline, printed beside llara.training.memory's estimate (ratio > 1: the
estimate is conservative).

    python benchmarks/bench_train_memory.py [--model smollm2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

GiB = 1024**3


def peak_rss(args: list[str]) -> int:
    """Peak RSS in bytes of `python -m llara ARGS` (run alone: RUSAGE_CHILDREN keeps the maximum)."""
    code = (
        "import resource, subprocess, sys;"
        "r = subprocess.run([sys.executable, '-m', 'llara', *sys.argv[1:]], capture_output=True, text=True);"
        "sys.stderr.write(r.stderr[-3000:] if r.returncode else '');"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 if r.returncode == 0 else -1)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    value = int(out.stdout.strip() or -1)
    if value < 0:
        sys.exit(f"failed: llara {' '.join(args)}\n{out.stderr}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()

    from llara.data.arxiv import arxiv_papers
    from llara.modeling.loading import load_model
    from llara.training.memory import ModelShape

    papers = arxiv_papers()
    work = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    train = work / "train.jsonl"
    rows = [
        {"query": p["title"], "pos": [p["abstract"]], "neg": [q["abstract"] for q in papers[i + 1 : i + 16]]}
        for i, p in enumerate(papers[:64])
    ]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": p["abstract"]}) + "\n" for p in papers))
    model, _ = load_model(args.model)
    shape = ModelShape.of(model)
    del model

    def finetune(batch, group, qlen, plen, *flags):
        out = work / f"ft-{batch}-{group}-{plen}-{len(flags)}"
        cli = ["finetune", "--model", args.model, "--train", str(train), "--output", str(out), "--max-steps", "1"]
        cli += ["--train-batch-size", str(batch), "--group-size", str(group), "--query-max-length", str(qlen)]
        return peak_rss([*cli, "--passage-max-length", str(plen), *flags])

    base = finetune(1, 1, 32, 32)
    print(f"model {args.model}: {shape}; baseline peak RSS {base / GiB:.2f} GiB")
    print("| config | tokens | measured activations GiB | estimated GiB | estimate / measured |")
    print("|---|---:|---:|---:|---:|")
    for batch, group, plen in ((2, 4, 160), (4, 4, 160), (2, 8, 256)):
        # texts are abstracts (~200-300 tokens): every passage reaches plen, queries (titles) are short
        measured = finetune(batch, group, 64, plen) - base
        est = batch * group * plen * shape.bytes_per_token(plen) + batch * 32 * shape.bytes_per_token(32)
        print(f"| finetune b{batch} g{group} p{plen} | {batch * group * plen} | {measured / GiB:.2f} | "
              f"{est / GiB:.2f} | {est / max(1, measured):.2f} |")  # fmt: skip
    for batch, chunk in ((8, 128), (16, 128)):
        out = work / f"pt-{batch}-{chunk}"
        cli = ["pretrain", "--model", args.model, "--corpus", str(corpus), "--output", str(out), "--max-steps", "1"]
        measured = peak_rss([*cli, "--train-batch-size", str(batch), "--chunk-tokens", str(chunk)]) - base
        est = batch * chunk * shape.bytes_per_token(chunk)
        print(f"| pretrain b{batch} c{chunk} | {batch * chunk} | {measured / GiB:.2f} | {est / GiB:.2f} | "
              f"{est / max(1, measured):.2f} |")  # fmt: skip
    print(f"(peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")


if __name__ == "__main__":
    main()
