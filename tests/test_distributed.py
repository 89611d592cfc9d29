"""Distributed training for real, on CPU processes (gloo): torchrun DDP and DeepSpeed ZeRO-1 / ZeRO-3
(DeepSpeed's CPU accelerator) give the losses of one process over the same global batch.

Each run is `llara pretrain` / `llara finetune` as a user types it, 3 steps, fp32, logging every
step: step 1 (warm-up, learning rate 0) compares the forward, step 3 the update made at step 2. One
process trains 4 rows a step; two processes 2 rows each, fine-tuning with --negatives-cross-device
(every query sees the other rank's passages, as in one process). LoRA dropout is off in fine-tuning:
two ranks draw their masks for other shapes than one process does.
"""

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from llara.testing import WORDS
from tests.conftest import failure, require_deepspeed

ROOT = Path(__file__).resolve().parents[1]
ZERO1, ZERO3 = str(ROOT / "configs" / "ds_zero1.json"), str(ROOT / "configs" / "ds_zero3_7b.json")
TOLERANCE = 2e-5  # relative, on each logged loss
PORTS = iter(range(29641, 29699))


def llara(args: list, processes: int, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m llara ...` in one process, or under `torchrun --nproc_per_node N`."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            str(next(PORTS)),
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [*launcher, "-m", "llara", *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
    assert res.returncode == 0, failure(res.stderr)
    assert "find_unused_parameters" not in res.stderr  # DDP's extra graph traversal: nothing is unused
    return res


def logged_losses(output: Path) -> list[float]:
    checkpoints = sorted((output.parent / f"{output.name}-checkpoints").glob("checkpoint-*"))
    history = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
    return [h["loss"] for h in history if "loss" in h]


@cache
def data(folder: Path) -> tuple[Path, Path]:
    """Reference-format pretraining rows (each with a next passage, so every rank's batch has both
    tasks) and fine-tuning rows with 3 negatives each."""
    import random

    rng = random.Random(3)

    def text(k: int) -> str:
        return " ".join(rng.choices(WORDS, k=k))

    rows, train = folder / "rows.jsonl", folder / "train.jsonl"
    with rows.open("w") as f:
        for _ in range(16):
            passage = text(20)
            f.write(json.dumps({"input": passage, "output_summarize": passage, "output_predict": text(20)}) + "\n")
    with train.open("w") as f:
        for _ in range(4):
            f.write(json.dumps({"query": text(5), "pos": [text(15)], "neg": [text(15) for _ in range(3)]}) + "\n")
    return rows, train


def run(command: str, tiny_model_dir, folder: Path, name: str, processes: int, *extra) -> list[float]:
    rows, train = data(folder)
    common = ["--model", tiny_model_dir, "--output", folder / name, "--max-steps", "3", "--save-every", "3",
              "--logging-steps", "1", "--precision", "fp32", "--lr", "1e-3"]  # fmt: skip
    if command == "pretrain":
        args = ["pretrain", "--corpus", rows, "--chunk-tokens", "96", *common]
    else:
        args = ["finetune", "--train", train, "--group-size", "4", "--lora-dropout", "0", *common]
        if processes > 1:
            args.append("--negatives-cross-device")
    llara([*args, "--train-batch-size", 4 // processes, *extra], processes, folder)
    return logged_losses(folder / name)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distributed")


CASES = {
    "pretrain": {
        "ddp+checkpointing": (2, "--gradient-checkpointing"),
        "zero1": (2, "--deepspeed", ZERO1),
        "zero3": (2, "--deepspeed", ZERO3),
        "zero3+full": (2, "--deepspeed", ZERO3, "--full"),
        "zero3 alone": (1, "--deepspeed", ZERO3),  # DeepSpeed without a launcher
    },
    "finetune": {
        "ddp+checkpointing+gradcache": (2, "--gradient-checkpointing", "--grad-cache", "--grad-cache-chunk", "3"),
        "zero1+checkpointing": (2, "--deepspeed", ZERO1, "--gradient-checkpointing"),
        "zero3": (2, "--deepspeed", ZERO3),
        "zero3+full": (2, "--deepspeed", ZERO3, "--full"),
    },
}


# CI's pass on the dependency floors runs DDP with gradient checkpointing and ZeRO-3 LoRA for each command
# (the paths most tied to transformers' and accelerate's versions); these run on the newest releases only.
LONG = {("pretrain", "zero1"), ("pretrain", "zero3+full"), ("pretrain", "zero3 alone"),
        ("finetune", "zero1+checkpointing"), ("finetune", "zero3+full")}  # fmt: skip


@pytest.mark.parametrize(
    "command, case",
    [
        pytest.param(command, case, id=f"{command}-{case}", marks=[pytest.mark.slow] if (command, case) in LONG else [])
        for command, cases in CASES.items()
        for case in cases
    ],
)
def test_distributed_losses_equal_one_process(tiny_model_dir, workdir, command, case):
    processes, *extra = CASES[command][case]
    if "--deepspeed" in extra:
        require_deepspeed()
    full = ["--full"] if "--full" in extra else []
    baseline = f"{command}-one{'-full' if full else ''}"
    if not (workdir / baseline).is_dir():
        run(command, tiny_model_dir, workdir, baseline, 1, *full)
    expected = logged_losses(workdir / baseline)
    got = run(
        command, tiny_model_dir, workdir, f"{command}-{case}".replace(" ", "-").replace("+", "-"), *CASES[command][case]
    )
    assert len(got) == len(expected) == 3
    for a, b in zip(expected, got, strict=True):
        assert abs(a - b) <= TOLERANCE * abs(a), (expected, got)
    assert expected[2] != expected[1]  # step 2 really updated the model


def test_grad_cache_under_deepspeed_is_refused_in_one_line(tiny_model_dir, tmp_path):
    require_deepspeed()
    _, train = data(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "llara", "finetune", "--model", str(tiny_model_dir), "--train", str(train),
         "--output", str(tmp_path / "ft"), "--max-steps", "1", "--grad-cache", "--deepspeed", ZERO1],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--grad-cache does not run under --deepspeed" in res.stderr and not (tmp_path / "ft").exists()
