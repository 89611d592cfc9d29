"""InfoNCE, GradCache and cross-device negatives on a tiny random LLaMA (CPU, fp32)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from llara.modeling.embedder import embed
from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder, add_special_tokens
from llara.modeling.recipes import load_recipe
from llara.training.finetune.data import ContrastiveCollator
from llara.training.finetune.loss import grad_cache_step, info_nce
from tests.finetune_ddp_worker import GROUPS, QUERIES, step

ROOT = Path(__file__).resolve().parents[1]


def test_info_nce_matches_hand_computed_cross_entropy():
    torch.manual_seed(0)
    q, p = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scores = q @ p.T / 0.05
    expected = -sum(torch.log_softmax(scores[i], 0)[2 * i] for i in range(3)) / 3
    assert torch.allclose(info_nce(q, p, 0.05), expected)
    # a perfect, confident retriever has near-zero loss; swapping targets makes it large
    q2 = F.normalize(torch.eye(6)[[0, 2, 4]], dim=-1)
    assert info_nce(q2, torch.eye(6), 0.01) < 1e-6
    assert info_nce(q2, torch.eye(6)[[1, 0, 3, 2, 5, 4]], 0.01) > 10


def tiny(tiny_model_dir, dropout: float = 0.0):
    model, tokenizer = load_model(tiny_model_dir)
    recipe = load_recipe("reference")
    add_special_tokens(model, tokenizer, recipe)
    model.config.attention_dropout = dropout
    for m in model.modules():  # attention dropout reads the module attribute
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = dropout
    model.train()
    batch = ContrastiveCollator(PromptBuilder(tokenizer, recipe), 48, 64)(list(zip(QUERIES, GROUPS, strict=True)))
    return model, recipe, batch


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_grad_cache_equals_plain_batch(tiny_model_dir):
    """Same loss and parameter gradients as one plain forward/backward of the whole batch."""
    model, recipe, batch = tiny(tiny_model_dir)

    def encode(part):
        return embed(model, part, recipe)

    def loss_fn(q, p):
        return info_nce(q, p, 0.05)

    plain = loss_fn(encode(batch["query"]), encode(batch["passage"]))
    plain.backward()
    expected = grads(model)
    model.zero_grad()
    cached = grad_cache_step(encode, batch["query"], batch["passage"], loss_fn, chunk_size=3)
    got = grads(model)
    assert abs(cached.item() - plain.item()) < 1e-4
    assert expected.keys() == got.keys() and len(got) > 10
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-4, rtol=1e-3), name


def test_grad_cache_replays_dropout_masks(tiny_model_dir):
    """With dropout on, GradCache gradients equal those of the plain batch run chunk by chunk under the
    same RNG states, i.e. the recomputation used the masks of the no-grad pass."""
    from llara.training.finetune.loss import RandomState, split

    model, recipe, batch = tiny(tiny_model_dir, 0.3)
    torch.manual_seed(3)
    # reference: the same chunking, each chunk embedded once with a graph, in the same order
    q_parts, p_parts = split(batch["query"], 3), split(batch["passage"], 3)
    states = []
    reps = []
    for part in q_parts + p_parts:
        states.append(RandomState())
        reps.append(embed(model, part, recipe))
    q, p = torch.cat(reps[: len(q_parts)]), torch.cat(reps[len(q_parts) :])
    loss = info_nce(q, p, 0.05)
    loss.backward()
    expected = grads(model)
    model.zero_grad()
    torch.manual_seed(3)
    cached = grad_cache_step(
        lambda b: embed(model, b, recipe),
        batch["query"],
        batch["passage"],
        lambda a, b: info_nce(a, b, 0.05),
        chunk_size=3,
    )
    assert abs(cached.item() - loss.item()) < 1e-4
    for name, g in grads(model).items():
        assert torch.allclose(g, expected[name], atol=1e-4, rtol=1e-3), name


def test_cross_device_negatives_match_one_process(tiny_model_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo), each holding half the batch and gathering the other half's
    embeddings: same loss and same (DDP-averaged) gradients as one process on the whole batch."""
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    proc = subprocess.run(
        [*cmd, str(ROOT / "tests" / "finetune_ddp_worker.py"), str(tiny_model_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(out)
    one = step(str(tiny_model_dir))
    assert abs(two["loss"] - one["loss"]) < 1e-4
    assert two["grads"].keys() == one["grads"].keys() and len(one["grads"]) > 10
    for name, g in one["grads"].items():
        assert torch.allclose(two["grads"][name], g, atol=1e-4, rtol=1e-3), name
