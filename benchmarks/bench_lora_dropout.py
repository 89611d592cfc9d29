"""LoRA dropout's cost on CPU: pretraining step time with dropout 0.05 vs none, on the same batches.

    python benchmarks/bench_lora_dropout.py [--steps 4] [--batch-size 8]

PEFT applies dropout to the input of every LoRA layer: one Bernoulli mask per targeted projection per
step (7 per decoder layer), which a CPU draws slowly. One model; its dropout modules are swapped for
identities (what PEFT builds for lora_dropout=0) on alternate steps, so both see the same machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_joint_pass import print_speedup  # run as a script, benchmarks/ is on sys.path

from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import load_recipe
from llara.training.common import prepare_model, special_token_ids
from llara.training.options import TrainOptions
from llara.training.pretrain.collator import PretrainCollator
from llara.training.pretrain.data import PretrainDataset
from llara.training.pretrain.loss import joint_loss

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--corpus", default=str(CISI))
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--dropout", type=float, default=0.05)
    args = ap.parse_args()

    recipe = load_recipe("reference")
    model, tokenizer = load_model(args.model)
    opts = TrainOptions(output=Path("unused"), max_steps=1, lora_dropout=args.dropout)
    model = prepare_model(model, tokenizer, recipe, opts).train()
    dropouts = {
        (layer, key): module
        for layer in model.modules()
        if isinstance(getattr(layer, "lora_dropout", None), torch.nn.ModuleDict)
        for key, module in layer.lora_dropout.items()
    }
    exclude = set(tokenizer.all_special_ids) | set(special_token_ids(tokenizer, recipe))
    collator = PretrainCollator(PromptBuilder(tokenizer, recipe), exclude, lm_loss=False)
    data = iter(PretrainDataset(args.corpus, tokenizer, args.chunk_tokens - collator.prompt_length()))
    batches = [collator([next(data) for _ in range(args.batch_size)]) for _ in range(args.steps + 1)]

    def step(batch: dict, dropout: bool) -> float:
        for (layer, key), module in dropouts.items():
            layer.lora_dropout[key] = module if dropout else torch.nn.Identity()
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss, _ = joint_loss(model, batch)
        loss.backward()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"dropout": [], "none": []}
    for i, batch in enumerate(batches):
        with_dropout, without = step(batch, True), step(batch, False)
        if i:  # the first step warms up oneDNN kernels
            times["dropout"].append(with_dropout)
            times["none"].append(without)
    print(
        f"model {args.model}, batch {args.batch_size} x {tuple(batches[0]['input_ids'].shape)[1]} tokens, "
        f"{len(dropouts)} LoRA layers, fp32, LM loss off, {args.steps} steps, {torch.get_num_threads()} threads"
    )
    print_speedup(times, baseline="dropout", candidate="none", what=f"without LoRA dropout {args.dropout}")


if __name__ == "__main__":
    main()
