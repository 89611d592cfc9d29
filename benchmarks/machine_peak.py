"""The machine's measured matmul peak, the yardstick the throughput benchmarks print fractions of.

Best of a few square matmuls large enough to saturate the cores (torch's own threads), in bf16 and
fp32. Run it in the same process as the measurement it divides, so both see the same machine.

    python benchmarks/machine_peak.py
"""

from __future__ import annotations

import time

import torch


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of the best of `repeats` [size x size] @ [size x size] products in `dtype`."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up: oneDNN picks and JITs its kernel
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def peaks() -> dict[str, float]:
    """{"bf16": GFLOP/s, "fp32": GFLOP/s} measured now."""
    return {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}


if __name__ == "__main__":
    p = peaks()
    print(f"matmul peak, {torch.get_num_threads()} threads: bf16 {p['bf16']:.0f} GFLOP/s, fp32 {p['fp32']:.0f} GFLOP/s")
