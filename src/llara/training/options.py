"""What a training run takes: the settings shared by `llara pretrain` and `llara finetune`.

Each job's settings are one dataclass whose field defaults are THE defaults: the CLI reads its option
defaults from it, and the demo and `llara ablate` build theirs from it with their own overrides.

    TrainOptions                      the shared Trainer machinery (steps, time, lr, LoRA, checkpoints)
    ├── PretrainOptions   (training/pretrain/options.py)   EBAE + EBAR adaptation
    └── FinetuneOptions   (training/finetune/options.py)   contrastive fine-tuning

This module and the two job modules import nothing heavy, so `llara --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llara.errors import LlaraError

LORA_SHORT = ("q", "k", "v", "o", "gate", "up", "down")  # LLaMA-family projection names without "_proj"


@dataclass
class TrainOptions:
    """Everything a user sets on the command line for a training run (pretrain and finetune alike)."""

    output: Path
    max_steps: int | None = None
    max_time: float | None = None  # minutes; stop cleanly and save when reached
    lr: float = 1e-4
    special_lr: float = 1e-3  # the new special-token embeddings: they barely move at the LoRA lr
    batch_size: int = 8
    grad_accum: int = 1
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    save_every: int = 200  # steps between checkpoints
    save_at_minutes: list[float] = field(default_factory=list)  # also checkpoint at these wall-clock minutes
    resume: bool = False
    seed: int = 42
    full: bool = False  # full fine-tuning instead of LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_SHORT))
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # path to a DeepSpeed JSON config (configs/)
    logging_steps: int = 5
    # How fast a step runs (training/speed.py, benchmarks/bench_train_throughput.py); all False gives
    # the step of llara before them. Each keeps the math (tests/test_train_speed.py).
    bf16_base: bool = True  # LoRA in bf16 on a CPU: frozen projection weights held in bf16, not cast every pass
    cpu_attention: bool = True  # on a CPU: eager attention, not SDPA's flash kernel; pretraining rows packed
    lean_lora: bool = True  # special-token rows trained without the whole embedding matrix; LoRA updates as addmm
    cheap_dropout: bool = True  # on a CPU: LoRA dropout masks from 16-bit draws of a fast generator, not bernoulli
    # The one switch: False takes PEFT's and transformers' own paths for all four above. Each also runs
    # only where tests prove it (training.common.fast_path): a CPU, no DeepSpeed, tested versions.
    fast_paths: bool = True
    keep_checkpoints: int = 2  # the newest N checkpoints stay (0: all); --save-at-minutes ones always stay

    def validate(self) -> None:
        if self.max_steps is None and self.max_time is None:
            raise LlaraError("give --max-steps or --max-time (or both)")
        if self.keep_checkpoints < 0:
            raise LlaraError(f"--keep-checkpoints must be 0 (all) or more, got {self.keep_checkpoints}")
        for name in ("lr", "special_lr", "batch_size", "grad_accum", "save_every", "lora_r"):
            if getattr(self, name) <= 0:
                raise LlaraError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise LlaraError(f"--max-steps must be positive, got {self.max_steps}")
        if self.max_time is not None and self.max_time <= 0:
            raise LlaraError(f"--max-time must be positive, got {self.max_time}")
        if self.deepspeed and not Path(self.deepspeed).is_file():
            raise LlaraError("DeepSpeed config not found", self.deepspeed)
        if self.output.exists() and not self.resume and any(self.output.iterdir()):
            raise LlaraError("output folder exists and is not empty (use --resume to continue a run)", self.output)

    @property
    def checkpoint_dir(self) -> Path:
        return self.output.parent / f"{self.output.name}-checkpoints"


def interrupted(output: Path) -> bool:
    """True when a run into `output` was killed mid-way: checkpoints beside it, no final model yet."""
    return (output.parent / f"{output.name}-checkpoints").is_dir() and not output.is_dir()
