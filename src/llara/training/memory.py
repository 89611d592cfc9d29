"""Will a training step fit? Activation memory estimated before training, against what is free.

The defaults of `llara finetune` are the 7B GPU recipe's (8 queries x 16 passages x 160 tokens): on a
24 GiB laptop that step needs tens of GB of activations, and the kernel's OOM killer would end the run
without a word. `plan_finetune` / `plan_pretrain` estimate the step first and, when it does not fit,
choose GradCache chunks (contrastive loss: same gradients) or micro-batches with gradient
accumulation (pretraining: per-example loss), say so, or stop with the flags to change.

The estimate counts the activations autograd keeps per token and layer for a LLaMA-family block
(norms, q/k/v/o, SwiGLU MLP, LoRA inputs), calibrated against peak RSS measured on CPU
(benchmarks/bench_train_memory.py), plus the step's fixed costs (optimizer state for --full).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from pathlib import Path

from llara.errors import LlaraError

log = logging.getLogger(__name__)

GiB = 1024**3
# Keep this share of the free memory for everything the estimate does not count (allocator slack,
# tokenised batches, the Trainer's own buffers).
HEADROOM = 0.6
CALIBRATION = 1.25


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def available_memory(device: str = "cpu") -> int:
    """Bytes this process can still allocate: the smallest of the machine's available memory, the
    cgroup's limit (containers, job schedulers) and an address-space rlimit (`ulimit -v`)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        cg_max, cg_cur = _read_int(limit_file), _read_int(usage_file)
        if cg_max is not None and cg_cur is not None and cg_max < 1 << 60:  # v1 writes "no limit" as ~2^63
            limits.append(cg_max - cg_cur)
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft, _ = resource.getrlimit(which)
        if soft != resource.RLIM_INFINITY:
            limits.append(soft - _vm_size())
    if not limits:
        return 1 << 62  # unknown: trust the user
    return max(0, min(limits))


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_dim: int
    params: int

    @classmethod
    def of(cls, model) -> ModelShape:
        c = model.config
        heads = c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return cls(
            layers=c.num_hidden_layers,
            hidden=c.hidden_size,
            intermediate=getattr(c, "intermediate_size", 4 * c.hidden_size),
            heads=heads,
            kv_dim=kv_heads * head_dim,
            params=sum(p.numel() for p in model.parameters()),
        )

    def bytes_per_token(
        self, seq_len: int, checkpointing: bool = False, half_bytes: int = 2, attention_scores: bool = False
    ) -> float:
        """Activation bytes autograd keeps for one token of a sequence of `seq_len`, all layers.

        Per layer: about 10 hidden- and 1 intermediate-sized fp32 tensors (norms, LoRA dropout
        outputs) and 15 hidden-, 3 key/value- and 5 intermediate-sized ones in the autocast dtype
        (`half_bytes`: 2 for bf16/fp16, 4 for fp32: the inputs of the base and LoRA projections, q/k/v
        around RoPE and attention, the SwiGLU gate); attention memory grows with the
        sequence only through its O(s) kernels' buffers. With gradient checkpointing only each layer's
        input is kept (plus one layer recomputed at a time). Times CALIBRATION: measured peak RSS on CPU
        was up to 1.2x this count (benchmarks/bench_train_memory.py); tiny models, where per-token
        costs that do not scale with the width dominate, take HEADROOM's slack. `attention_scores`: the
        attention keeps its score matrix (training.speed.cpu_attention: fp32 softmax output and its
        bf16 copy, `heads x seq_len` each per token) instead of an O(s) kernel's buffers."""
        h, i = self.hidden, self.intermediate
        scores = (4 + half_bytes) * self.heads * seq_len if attention_scores else 4 * self.heads * min(seq_len, 64)
        fp32 = 4 * (10 * h + i) + scores
        per_layer = fp32 + half_bytes * (15 * h + 3 * self.kv_dim + 5 * i)
        if checkpointing:
            return CALIBRATION * (4 * h * self.layers + per_layer)
        return CALIBRATION * per_layer * self.layers


def fixed_bytes(shape: ModelShape, full: bool) -> int:
    """What a step holds beyond activations: gradients and AdamW state of the trained weights."""
    return 12 * shape.params if full else 0  # LoRA: a few MB


def _fits(needed: float, available: int) -> bool:
    return needed <= HEADROOM * available


def plan_finetune(
    shape: ModelShape,
    batch: int,
    group: int,
    qlen: int,
    plen: int,
    *,
    grad_cache: bool,
    chunk: int,
    checkpointing: bool,
    full: bool,
    available: int,
    half_bytes: int = 2,
    attention_scores: bool = False,
    grad_cache_refused: str | None = None,
) -> tuple[bool, int]:
    """(grad_cache, grad_cache_chunk) that fit the step in `available` bytes, announcing any change.

    Raises LlaraError when not even one text at a time fits, or when GradCache would be needed and
    `grad_cache_refused` says why it cannot run."""
    extra = fixed_bytes(shape, full)
    per_passage = shape.bytes_per_token(plen, checkpointing, half_bytes, attention_scores) * plen
    per_query = shape.bytes_per_token(qlen, checkpointing, half_bytes, attention_scores) * qlen
    whole = int(batch * (per_query + group * per_passage)) + extra
    if not grad_cache and _fits(whole, available):
        return False, chunk
    if grad_cache_refused:
        raise LlaraError(
            f"a step of {batch} queries x {group} passages x {plen} tokens needs about {whole / GiB:.1f} GiB of "
            f"activations and {available / GiB:.1f} GiB is free, and {grad_cache_refused}"
        )
    # GradCache: one chunk of texts holds activations at a time (the passages are the larger side).
    fitting = int((HEADROOM * available - extra) // per_passage)
    if fitting < 1:
        raise LlaraError(
            f"one training text of {plen} tokens needs about {per_passage / GiB:.1f} GiB of activations but only "
            f"{available / GiB:.1f} GiB is free: lower --passage-max-length, add --gradient-checkpointing"
            + (", or drop --full" if full else "")
        )
    best = min(chunk, fitting) if grad_cache else min(fitting, batch * group)
    if not grad_cache:
        log.warning(
            "a step of %d queries x %d passages x %d tokens needs about %.1f GiB of activations and %.1f GiB is "
            "free: training with GradCache in chunks of %d texts instead (the same gradients; choose with "
            "--grad-cache --grad-cache-chunk N, or lower --train-batch-size / --group-size)",
            batch, group, plen, whole / GiB, available / GiB, best,
        )  # fmt: skip
    elif best < chunk:
        log.warning(
            "--grad-cache-chunk %d needs about %.1f GiB of activations and %.1f GiB is free: using chunks of %d texts",
            chunk, chunk * per_passage / GiB, available / GiB, best,
        )  # fmt: skip
    return True, best


def plan_pretrain(
    shape: ModelShape,
    batch: int,
    grad_accum: int,
    seq_len: int,
    *,
    checkpointing: bool,
    full: bool,
    available: int,
    half_bytes: int = 2,
    attention_scores: bool = False,
) -> tuple[int, int]:
    """(batch_size, grad_accum) per step that fit, keeping batch x accumulation; announces a change."""
    extra = fixed_bytes(shape, full)
    per_row = shape.bytes_per_token(seq_len, checkpointing, half_bytes, attention_scores) * seq_len
    if _fits(batch * per_row + extra, available):
        return batch, grad_accum
    micro = next((b for b in range(batch, 0, -1) if batch % b == 0 and _fits(b * per_row + extra, available)), 0)
    if micro == 0:
        raise LlaraError(
            f"one training row of {seq_len} tokens needs about {per_row / GiB:.1f} GiB of activations but only "
            f"{available / GiB:.1f} GiB is free: lower --chunk-tokens, add --gradient-checkpointing"
            + (", or drop --full" if full else "")
        )
    log.warning(
        "a step of %d rows x %d tokens needs about %.1f GiB of activations and %.1f GiB is free: training %d rows "
        "at a time with %d accumulation steps instead (the same effective batch)",
        batch, seq_len, (batch * per_row + extra) / GiB, available / GiB, micro, grad_accum * batch // micro,
    )  # fmt: skip
    return micro, grad_accum * batch // micro
