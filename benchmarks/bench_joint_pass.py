"""Joint EBAE + EBAR pass vs two separate passes: forward + backward step time on real text.

    python benchmarks/bench_joint_pass.py [--model smollm2] [--batch-size 8]

Both paths compute the same loss (tests/test_pretrain_loss.py checks it); the joint pass runs the
shared prefix + text once. Prints ms/step of each and the ratio two-pass / joint, measured in one run
with the steps interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from llara.modeling.loading import load_model
from llara.modeling.precision import autocast_dtype
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import load_recipe
from llara.training.common import prepare_model, special_token_ids
from llara.training.options import TrainOptions
from llara.training.pretrain.collator import PretrainCollator
from llara.training.pretrain.data import PretrainDataset
from llara.training.pretrain.loss import joint_loss, two_pass_loss

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--corpus", default=str(CISI))
    ap.add_argument("--recipe", default="reference")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--no-lm-loss", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    recipe = load_recipe(args.recipe)
    model, tokenizer = load_model(args.model)
    model = prepare_model(model, tokenizer, recipe, TrainOptions(output=Path("unused"), max_steps=1))
    prompts = PromptBuilder(tokenizer, recipe)
    exclude = set(tokenizer.all_special_ids) | set(special_token_ids(tokenizer, recipe))
    collator = PretrainCollator(prompts, exclude, lm_loss=not args.no_lm_loss)
    data = iter(PretrainDataset(args.corpus, tokenizer, args.chunk_tokens - collator.prompt_length()))
    batches = [[next(data) for _ in range(args.batch_size)] for _ in range(args.steps + 1)]
    amp = autocast_dtype(args.precision, torch.device("cpu"))

    def step(fn, *batch) -> float:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = fn(model, *batch)
        loss.backward()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"joint": [], "two-pass": []}
    for i, features in enumerate(batches):
        joint = step(joint_loss, collator(features))
        two = step(two_pass_loss, *collator.separate(features))
        if i:  # the first step warms up oneDNN kernels
            times["joint"].append(joint)
            times["two-pass"].append(two)
    tokens = sum(len(f["text_ids"]) for f in batches[0])
    print(
        f"model {args.model}, recipe {recipe.name}, batch {args.batch_size} x ~{tokens // args.batch_size} "
        f"text tokens, precision {amp or 'fp32'}, LM loss {'off' if args.no_lm_loss else 'on'}, "
        f"{args.steps} steps, {torch.get_num_threads()} threads"
    )
    print_speedup(times, baseline="two-pass", candidate="joint", what="joint vs two-pass")


def print_speedup(times: dict[str, list[float]], baseline: str, candidate: str, what: str) -> None:
    """Median (and min) ms/step of each path, then the baseline / candidate ratio of the medians."""
    for name, ts in times.items():
        print(f"{name:9s} median {1000 * statistics.median(ts):8.1f} ms/step   (min {1000 * min(ts):.1f})")
    ratio = statistics.median(times[baseline]) / statistics.median(times[candidate])
    print(f"speed-up {what}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
