"""Which dtype a forward pass runs in: one rule for encoding, explaining and training."""

from __future__ import annotations

import torch

from llara.compat import cpu_runs_bf16
from llara.errors import LlaraError
from llara.settings import Precision

PRECISIONS = tuple(p.value for p in Precision)  # auto | fp32 | bf16 | fp16 (Python callers pass strings)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_runs_bf16()
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to autocast to, or None for plain fp32. `auto` is bf16 where the device runs it natively."""
    if precision not in PRECISIONS:
        raise LlaraError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or bf16_supported(device):
        return torch.bfloat16
    return None
