"""Peak memory of one contrastive training step: plain batch vs GradCache (--grad-cache).

Each mode runs in its own subprocess (peak RSS is per process), on the same model and batch:
64 queries with one positive each (plus in-batch negatives), LoRA as `llara finetune` sets it up.
Prints both peaks, the growth above the loaded model, and the ratios.

    python benchmarks/bench_grad_cache.py [--model smollm2] [--batch 64] [--chunk 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

WORDS = "library information retrieval classification index query document user system science data".split()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def one_step(model_name: str, batch: int, chunk: int | None, query_len: int, passage_len: int) -> dict:
    import random

    import torch

    from llara.modeling.embedder import embed
    from llara.modeling.loading import load_model
    from llara.modeling.prompts import PromptBuilder
    from llara.modeling.recipes import load_recipe
    from llara.training.common import prepare_model
    from llara.training.finetune.data import ContrastiveCollator
    from llara.training.finetune.loss import grad_cache_step, info_nce
    from llara.training.options import TrainOptions

    torch.manual_seed(0)
    model, tokenizer = load_model(model_name)
    recipe = load_recipe("reference")
    model = prepare_model(model, tokenizer, recipe, TrainOptions(output=Path("unused"), max_steps=1))
    rng = random.Random(0)
    rows = [(" ".join(rng.choices(WORDS, k=20)), [" ".join(rng.choices(WORDS, k=200))]) for _ in range(batch)]
    inputs = ContrastiveCollator(PromptBuilder(tokenizer, recipe), query_len, passage_len)(rows)
    loaded = rss_mb()
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if chunk is None:
            loss = info_nce(embed(model, inputs["query"], recipe), embed(model, inputs["passage"], recipe), 0.01)
            loss.backward()
        else:
            loss = grad_cache_step(
                lambda part: embed(model, part, recipe),
                inputs["query"],
                inputs["passage"],
                lambda q, p: info_nce(q, p, 0.01),
                chunk,
            )
    return {"loss": loss.item(), "loaded_mb": loaded, "peak_mb": rss_mb(), "step_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--query-len", type=int, default=32)
    ap.add_argument("--passage-len", type=int, default=128)
    ap.add_argument("--worker", choices=["plain", "cache"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        chunk = a.chunk if a.worker == "cache" else None
        print(json.dumps(one_step(a.model, a.batch, chunk, a.query_len, a.passage_len)))
        return
    results = {}
    for mode in ("plain", "cache"):
        cmd = [sys.executable, __file__, "--worker", mode, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        r = results[mode]
        print(
            f"{mode:5s}: loss {r['loss']:.4f}  peak RSS {r['peak_mb']:.0f} MB "
            f"(+{r['peak_mb'] - r['loaded_mb']:.0f} MB over the loaded model)  step {r['step_s']:.1f} s"
        )
    p, c = results["plain"], results["cache"]
    print(
        f"batch {a.batch}, chunk {a.chunk}, {a.model}: peak RSS ratio cache/plain = {c['peak_mb'] / p['peak_mb']:.2f}; "
        f"growth ratio = {(c['peak_mb'] - c['loaded_mb']) / (p['peak_mb'] - p['loaded_mb']):.2f}; "
        f"time ratio = {c['step_s'] / p['step_s']:.2f}; |loss diff| = {abs(c['loss'] - p['loss']):.2e}"
    )


if __name__ == "__main__":
    main()
