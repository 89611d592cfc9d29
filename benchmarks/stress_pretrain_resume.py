"""Stress: a long `llara pretrain` run, SIGKILLed and resumed several times, ends with the same loss curve.

A tiny random LLaMA (built in code) pretrains on real text (CISI's corpus) for --steps steps with a
checkpoint every --save-every steps, once without interruption and once killed --kills times: each
time the run has written a new checkpoint, it is killed after a random share of one save interval
(so kills land mid-step, mid-save or mid-log), then restarted with --resume. The logged losses of the
two runs and their final weights are compared; the script exits 1 if they differ.

    python benchmarks/stress_pretrain_resume.py  # 10,000 steps, 3 kills
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from llara.testing import make_tiny_model

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"


def checkpoints(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*")) if folder.is_dir() else []


def llara(args: list, log: Path) -> subprocess.Popen:
    """Start `llara ARGS`, its output going to `log` (a pipe nobody reads would stall it)."""
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "llara", "--quiet", *map(str, args)], stdout=f, stderr=f)


def finished(proc: subprocess.Popen, log: Path) -> None:
    if proc.wait():
        raise SystemExit(f"llara failed ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")


def loss_curve(run: Path, steps: int) -> dict[int, float]:
    folder = run.with_name(f"{run.name}-checkpoints") / f"checkpoint-{steps}"
    state = json.loads((folder / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--save-every", type=int, default=500)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=CISI)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_model(tmp / "model")
        base = ["pretrain", "--model", model, "--corpus", args.corpus, "--max-steps", args.steps]
        base += ["--save-every", args.save_every, "--logging-steps", 10, "--train-batch-size", 4, "--chunk-tokens", 84]
        base += ["--precision", "fp32"]

        t0 = time.perf_counter()
        log = tmp / "llara.log"
        finished(llara([*base, "--output", tmp / "straight"], log), log)
        straight_s = time.perf_counter() - t0
        interval = straight_s * args.save_every / args.steps  # seconds per save interval, roughly
        print(f"uninterrupted: {args.steps} steps in {straight_s:.0f} s")

        out = tmp / "killed"
        t0 = time.perf_counter()
        # kill once past each of these checkpoints, spread over the run
        targets = sorted(rng.sample(range(args.save_every, args.steps, args.save_every), args.kills))
        for kill, target in enumerate(targets, start=1):
            before = checkpoints(out.with_name("killed-checkpoints"))
            proc = llara([*base, "--output", out, *(["--resume"] if before else [])], log)
            while proc.poll() is None:  # wait for a new checkpoint at or past the target
                now = checkpoints(out.with_name("killed-checkpoints"))
                if now != before and now[-1] >= target:
                    break
                time.sleep(0.05)
            delay = rng.uniform(0, interval)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            print(f"kill {kill}: {delay:.1f} s after checkpoint {checkpoints(out.with_name('killed-checkpoints'))[-1]}")
        finished(llara([*base, "--output", out, "--resume"], log), log)
        killed_s = time.perf_counter() - t0
        print(f"killed {args.kills} times and resumed: {killed_s:.0f} s in all")

        a, b = loss_curve(tmp / "straight", args.steps), loss_curve(out, args.steps)
        if a.keys() != b.keys():
            raise SystemExit(f"logged steps differ: {sorted(a.keys() ^ b.keys())[:10]}")
        worst = max(abs(a[s] - b[s]) / max(abs(a[s]), 1e-8) for s in a)
        wa, wb = load_file(tmp / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
        weight_diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        print(f"loss curve: {len(a)} logged steps, first {a[min(a)]:.4f} -> last {a[max(a)]:.4f}")
        print(f"max relative loss difference {worst:.2e}; max weight difference {weight_diff:.2e}")
        if worst > 1e-4 or weight_diff > 1e-4 or not all(torch.isfinite(v).all() for v in wb.values()):
            raise SystemExit("FAIL: the resumed run does not match the uninterrupted one")
        print("PASS: same loss curve and weights")


if __name__ == "__main__":
    main()
