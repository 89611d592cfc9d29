"""Gradient checkpointing in every training mode gives the plain path's losses and gradients.

{pretrain, finetune} x {LoRA, --full} x {checkpointing on, off} x {fp32, bf16} (x {GradCache on, off}
for fine-tuning), on a tiny random LLaMA. Each case is compared with the same mode and precision
without checkpointing (and without GradCache): recomputing a layer's forward in backward, with the
RNG state replayed, must give the same numbers. Tolerances: fp32 relative 1e-5 on losses and
gradients (as scaled by each tensor's largest gradient); bf16 1e-2 (the recomputed bf16 forward may
round differently where kernels choose another blocking), GradCache adds no more than fp32 rounding.
"""

from pathlib import Path

import pytest
import torch

from llara.modeling.embedder import embed
from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import load_recipe
from llara.training.common import prepare_model
from llara.training.finetune.data import ContrastiveCollator
from llara.training.finetune.loss import grad_cache_step, info_nce
from llara.training.finetune.options import FinetuneOptions
from tests.finetune_ddp_worker import GROUPS, QUERIES
from tests.test_train_speed import build, step

TOLERANCE = {"fp32": 1e-5, "bf16": 1e-2}


def compare(plain, other, tol):
    loss_a, grads_a = plain
    loss_b, grads_b = other
    assert abs(loss_a - loss_b) <= tol * abs(loss_a), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, g in grads_a.items():
        scale = g.abs().max().clamp(min=1e-12)
        assert (g - grads_b[name]).abs().max() <= tol * scale, name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_pretrain_step_with_checkpointing(tiny_model_dir, tmp_path, full, precision):
    def run(checkpointing):
        model, recipe, joint, passages = build(
            tiny_model_dir, tmp_path, full=full, precision=precision, gradient_checkpointing=checkpointing
        )
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules()) == checkpointing
        loss, _, _, grads = step(model, recipe, joint, passages, autocast=precision == "bf16")
        return float(loss.detach()), grads

    compare(run(False), run(True), TOLERANCE[precision])


def finetune_step(model_dir: Path, tmp_path: Path, full, precision, checkpointing, grad_cache, dropout=0.0):
    model, tokenizer = load_model(model_dir)
    recipe = load_recipe("reference")
    opts = FinetuneOptions(
        output=tmp_path / "unused", max_steps=1, full=full, precision=precision, gradient_checkpointing=checkpointing,
        lora_dropout=dropout,
    )  # fmt: skip
    model = prepare_model(model, tokenizer, recipe, opts)
    generator = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # LoRA starts as a no-op: non-zero B, so its dropout changes the numbers
            p.data = torch.randn(p.shape, generator=generator) * 0.05
    batch = ContrastiveCollator(PromptBuilder(tokenizer, recipe), 48, 64)(list(zip(QUERIES, GROUPS, strict=True)))
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the LoRA dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        if grad_cache:
            loss = grad_cache_step(
                lambda part: embed(model, part, recipe), batch["query"], batch["passage"],
                lambda q, p: info_nce(q, p, 0.05), chunk_size=3,
            )  # fmt: skip
        else:
            loss = info_nce(embed(model, batch["query"], recipe), embed(model, batch["passage"], recipe), 0.05)
            loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


@pytest.mark.parametrize("grad_cache", [False, True], ids=["plain", "gradcache"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_finetune_step_with_checkpointing(tiny_model_dir, tmp_path, full, precision, grad_cache):
    """Without dropout every variant equals the plain step (GradCache chunks draw other dropout masks
    than one whole batch does, so that comparison needs dropout off)."""
    plain = finetune_step(tiny_model_dir, tmp_path, full, precision, checkpointing=False, grad_cache=False)
    tol = TOLERANCE[precision] * (3 if precision == "bf16" and grad_cache else 1)
    compare(plain, finetune_step(tiny_model_dir, tmp_path, full, precision, True, grad_cache), tol)
    if grad_cache:
        # bf16: GradCache's chunks are padded to their own lengths, which rounds differently in bf16.
        tol = TOLERANCE[precision] * (3 if precision == "bf16" else 1)
        compare(plain, finetune_step(tiny_model_dir, tmp_path, full, precision, False, True), tol)


@pytest.mark.parametrize("grad_cache", [False, True], ids=["plain", "gradcache"])
def test_checkpointing_replays_lora_dropout(tiny_model_dir, tmp_path, grad_cache):
    """With LoRA dropout the recomputed forward draws the masks of the first one."""
    a = finetune_step(tiny_model_dir, tmp_path, False, "fp32", False, grad_cache, dropout=0.1)
    b = finetune_step(tiny_model_dir, tmp_path, False, "fp32", True, grad_cache, dropout=0.1)
    compare(a, b, TOLERANCE["fp32"])
    c = finetune_step(tiny_model_dir, tmp_path, False, "fp32", False, grad_cache, dropout=0.0)
    assert abs(a[0] - c[0]) > 1e-6  # the dropout is really on


def test_cli_training_with_checkpointing_runs(tiny_model_dir, tmp_path):
    """The flag as users pass it, LoRA (the default) and --full, both commands."""
    from tests.conftest import run_cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("\n\n".join(QUERIES + [g[0] for g in GROUPS]) + "\n\n") * 3)
    rows = tmp_path / "train.jsonl"
    pairs = zip(QUERIES, GROUPS, strict=True)
    rows.write_text("".join(f'{{"query": "{q}", "pos": ["{g[0]}"], "neg": ["{g[1]}"]}}\n' for q, g in pairs))
    for extra in ([], ["--full"]):
        name = "full" if extra else "lora"
        res = run_cli(
            "pretrain", "--model", tiny_model_dir, "--corpus", corpus, "--output", tmp_path / f"pt-{name}",
            "--max-steps", "2", "--train-batch-size", "2", "--gradient-checkpointing", *extra,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        res = run_cli(
            "finetune", "--model", tmp_path / f"pt-{name}", "--train", rows, "--output", tmp_path / f"ft-{name}",
            "--max-steps", "2", "--train-batch-size", "2", "--gradient-checkpointing", *extra,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
