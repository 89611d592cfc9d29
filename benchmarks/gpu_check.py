"""The in-process half of benchmarks/gpu_check.sh: the joint pass on the accelerator, and bf16 encoding.

1. Joint EBAE + EBAR pass == two separate passes (losses and gradients) on the device, in fp32 and
   bf16, with SDPA attention and llara's 4D mask, on smollm2 and a padded batch of real text.
2. Encoding speed: LlaraEncoder in bf16 vs fp32 on the same documents, docs/s and mean cosine.
3. Gradient checkpointing (LoRA and --full, bf16) gives the step without it: loss and gradients.

Prints one JSON object per check (the shell script collects them into its report). Runs on CPU too
(`--device cpu`), which is how it is tested where no GPU is lent.

    python benchmarks/gpu_check.py --device cuda --docs 2000
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def joint_pass_check(device: str, dtype: torch.dtype) -> dict:
    from llara.data.arxiv import arxiv_papers
    from llara.modeling.loading import load_model
    from llara.modeling.prompts import PromptBuilder, add_special_tokens
    from llara.modeling.recipes import load_recipe
    from llara.training.common import special_token_ids
    from llara.training.pretrain.collator import PretrainCollator
    from llara.training.pretrain.loss import joint_loss, two_pass_loss

    model, tokenizer = load_model("smollm2")
    recipe = load_recipe("reference")
    torch.manual_seed(0)
    add_special_tokens(model, tokenizer, recipe)
    prompts = PromptBuilder(tokenizer, recipe)
    exclude = set(tokenizer.all_special_ids) | set(special_token_ids(tokenizer, recipe))
    collator = PretrainCollator(prompts, exclude, lm_loss=True)
    texts = [p["abstract"][: 60 + 70 * i] for i, p in enumerate(arxiv_papers()[:4])]  # padded: 4 lengths
    ids = prompts.text_ids(texts)
    features = [
        {"text_ids": ids[i], "own_ids": ids[i], "next_ids": ids[(i + 1) % 4] if i != 1 else None} for i in range(4)
    ]
    model = model.to(device=device, dtype=dtype).train()

    def run(fn, *batches):
        model.zero_grad(set_to_none=True)
        batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
        total, parts = fn(model, *batches)
        total.backward()
        grad = torch.cat([p.grad.double().flatten() for p in model.parameters() if p.grad is not None])
        return float(total), {k: float(v) for k, v in parts.items()}, grad

    total_j, parts_j, grad_j = run(joint_loss, collator(features))
    total_s, parts_s, grad_s = run(two_pass_loss, *collator.separate(features))
    cosine = float(grad_j @ grad_s / (grad_j.norm() * grad_s.norm()))  # float64: 1.5e8 entries
    rel = abs(total_j - total_s) / max(abs(total_s), 1e-9)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    return {
        "check": f"joint pass == two passes ({str(dtype).removeprefix('torch.')}, sdpa, {device})",
        "loss_joint": total_j,
        "loss_two_pass": total_s,
        "parts_joint": parts_j,
        "parts_two_pass": parts_s,
        "loss_rel_diff": rel,
        "grad_cosine": cosine,
        "ok": rel < tol and cosine > 1 - tol,
    }


def encode_check(device: str, docs: int) -> dict:
    from llara.data.arxiv import arxiv_papers
    from llara.inference.encoder import LlaraEncoder

    base = [{"title": p["title"], "text": p["abstract"]} for p in arxiv_papers()]
    corpus = [base[i % len(base)] for i in range(docs)]  # repeated papers: the same work per text
    rates, emb = {}, {}
    for precision in ("fp32", "bf16"):
        enc = LlaraEncoder.from_pretrained("smollm2", precision=precision, device=device)
        enc.encode_corpus(corpus[:64], show_progress_bar=False)  # warm-up (kernels, allocator)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        emb[precision] = enc.encode_corpus(corpus, batch_size=64 if device == "cuda" else 32, show_progress_bar=False)
        if device == "cuda":
            torch.cuda.synchronize()
        rates[precision] = docs / (time.perf_counter() - t)
        del enc
    cosine = float((emb["fp32"] * emb["bf16"]).sum(1).mean())
    return {
        "check": f"encode {docs} arXiv abstracts, smollm2, reference recipe ({device})",
        "docs_per_s_fp32": rates["fp32"],
        "docs_per_s_bf16": rates["bf16"],
        "bf16_speedup": rates["bf16"] / rates["fp32"],
        "mean_cosine_bf16_vs_fp32": cosine,
        "ok": cosine > 0.999,
    }


def checkpointing_check(device: str, full: bool) -> dict:
    """One pretraining step (joint pass) and one contrastive step of smollm2 in bf16, with and without
    gradient checkpointing: the same loss and gradients (LoRA or --full)."""
    from llara.modeling.embedder import embed
    from llara.modeling.loading import load_model
    from llara.modeling.prompts import PromptBuilder
    from llara.modeling.recipes import load_recipe
    from llara.training.common import prepare_model
    from llara.training.finetune.loss import info_nce
    from llara.training.pretrain.options import PretrainOptions

    texts = ["dense retrieval with large language models", "a library classifies its books", "what is a query?"]
    out = {}
    for checkpointing in (False, True):
        model, tokenizer = load_model("smollm2")
        recipe = load_recipe("reference")
        opts = PretrainOptions(output="unused", max_steps=1, full=full, gradient_checkpointing=checkpointing)
        model = prepare_model(model, tokenizer, recipe, opts).to(device)
        prompts = PromptBuilder(tokenizer, recipe)
        q = prompts.pad(prompts.build(texts, "query", 32))
        p = prompts.pad(prompts.build(texts[::-1], "passage", 64))
        q, p = ({k: v.to(device) for k, v in b.items()} for b in (q, p))
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = info_nce(embed(model, q, recipe), embed(model, p, recipe), 0.05)
        loss.backward()
        grad = torch.cat([w.grad.double().flatten() for w in model.parameters() if w.grad is not None])
        out[checkpointing] = (float(loss), grad)
        del model
    (l0, g0), (l1, g1) = out[False], out[True]
    rel = abs(l0 - l1) / max(abs(l0), 1e-9)
    cosine = float(g0 @ g1 / (g0.norm() * g1.norm()))
    return {
        "check": f"gradient checkpointing == none ({'full' if full else 'LoRA'}, bf16, {device})",
        "loss_rel_diff": rel,
        "grad_cosine": cosine,
        "ok": rel < 1e-2 and cosine > 0.99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--docs", type=int, default=2000, help="documents to encode (repeats of the 314 papers)")
    args = parser.parse_args()
    for dtype in (torch.float32, torch.bfloat16):
        print(json.dumps(joint_pass_check(args.device, dtype)), flush=True)
    print(json.dumps(encode_check(args.device, args.docs)), flush=True)
    for full in (False, True):
        print(json.dumps(checkpointing_check(args.device, full)), flush=True)


if __name__ == "__main__":
    main()
