"""Training steps are fitted to the memory the process has, before training: never a silent OOM kill."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from llara.errors import LlaraError
from llara.training.memory import GiB, ModelShape, available_memory, plan_finetune, plan_pretrain

SMOLLM2 = ModelShape(layers=30, hidden=576, intermediate=1536, heads=9, kv_dim=192, params=134_515_008)


def test_readme_finetune_defaults_switch_to_grad_cache_on_a_24_gib_machine(caplog):
    """The 7B recipe's step (8 x 16 x 160 tokens) is tens of GB for SmolLM2: GradCache is chosen, and said."""
    with caplog.at_level(logging.WARNING):
        grad_cache, chunk = plan_finetune(SMOLLM2, 8, 16, 64, 160, grad_cache=False, chunk=8, checkpointing=False,
                                          full=False, available=20 * GiB)  # fmt: skip
    assert grad_cache and 1 <= chunk < 8 * 16
    assert chunk * 160 * SMOLLM2.bytes_per_token(160) <= 0.6 * 20 * GiB
    assert "GradCache in chunks of" in caplog.text
    # on a big machine nothing changes and nothing is said
    caplog.clear()
    assert plan_finetune(SMOLLM2, 8, 16, 64, 160, grad_cache=False, chunk=8, checkpointing=False, full=False,
                         available=500 * GiB) == (False, 8)  # fmt: skip
    assert not caplog.text


def test_user_chunk_size_is_lowered_and_impossible_steps_are_refused():
    assert plan_finetune(SMOLLM2, 8, 16, 64, 160, grad_cache=True, chunk=64, checkpointing=False, full=False,
                         available=2 * GiB)[1] < 64  # fmt: skip
    with pytest.raises(LlaraError, match="--passage-max-length.*--gradient-checkpointing"):
        plan_finetune(SMOLLM2, 8, 16, 64, 8192, grad_cache=False, chunk=8, checkpointing=False, full=False,
                      available=1 * GiB)  # fmt: skip


def test_pretraining_keeps_the_effective_batch():
    per_row = 128 * SMOLLM2.bytes_per_token(128)
    batch, accum = plan_pretrain(SMOLLM2, 8, 1, 128, checkpointing=False, full=False,
                                 available=int(3.5 * per_row / 0.6))  # fmt: skip
    assert (batch, accum) == (2, 4)
    assert plan_pretrain(SMOLLM2, 8, 2, 128, checkpointing=False, full=False, available=500 * GiB) == (8, 2)
    # gradient checkpointing keeps far less per token
    assert SMOLLM2.bytes_per_token(128, checkpointing=True) < SMOLLM2.bytes_per_token(128) / 5


def test_available_memory_sees_an_address_space_limit():
    code = (
        "import resource; from llara.training.memory import available_memory, _vm_size;"
        "limit = _vm_size() + 3 * 2**30; resource.setrlimit(resource.RLIMIT_AS, (limit, limit));"
        "print(available_memory())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 2.5 * GiB < int(out.stdout) <= 3 * GiB
    assert available_memory() > 0


LIMITED = """
import resource, sys
import torch, transformers, peft  # loaded first: the limit counts from here
from llara.training.memory import _vm_size
limit = _vm_size() + int(float(sys.argv[1]) * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.argv = ["llara", *sys.argv[2:]]
from llara.cli import main
main()
"""


def run_limited(gib: float, *args) -> subprocess.CompletedProcess:
    """`llara ARGS` allowed `gib` GiB of address space beyond its imports. One malloc arena: an address-space
    limit counts reserved virtual memory, and glibc reserves 64 MiB per thread arena."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    cmd = [sys.executable, "-c", LIMITED, str(gib), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_finetune_under_a_memory_limit_fits_itself_or_stops_clearly(tiny_model_dir, tmp_path):
    words = "dense passage retrieval index library vector token".split()
    rows = [
        {"query": f"query {i}", "pos": [" ".join(words[(i + j) % 7] for j in range(600))],
         "neg": [" ".join(words[(i * j) % 7] for j in range(600)) for _ in range(2)]}
        for i in range(16)
    ]  # fmt: skip
    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ft"
    args = ["finetune", "--model", tiny_model_dir, "--train", train, "--output", out, "--max-steps", "1",
            "--train-batch-size", "16", "--group-size", "16", "--passage-max-length", "512",
            "--precision", "fp32"]  # fmt: skip
    result = run_limited(3.0, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GradCache in chunks of" in result.stderr
    stage = json.loads((out / "llara.json").read_text())["training"][-1]
    assert stage["grad_cache"] is True and 1 <= stage["grad_cache_chunk"] < 16 * 16
    # a step that cannot fit even one text at a time: a clear error, exit 2, nothing written
    out2 = tmp_path / "ft2"
    big = [*args[:6], out2, *args[7:-4], "--passage-max-length", "200000", "--precision", "fp32"]
    result = run_limited(1.0, *big)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "--passage-max-length" in result.stderr and "Traceback" not in result.stderr
    assert not out2.exists()
