"""What a training run takes: the settings shared by `llara pretrain` and `llara finetune`.

Each job's settings are one dataclass whose field defaults are THE defaults: the CLI reads its option
defaults from it, and the demo and `llara ablate` build theirs from it with their own overrides.

    TrainOptions                      the shared Trainer machinery (steps, time, lr, LoRA, checkpoints)
    ├── PretrainOptions   (training/pretrain/options.py)   EBAE + EBAR adaptation
    └── FinetuneOptions   (training/finetune/options.py)   contrastive fine-tuning

This module and the two job modules import nothing heavy, so `llara --help` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from llara import settings
from llara.errors import LlaraError
from llara.settings import Precision, TextCase, comma_names, comma_numbers, joined, option

LORA_SHORT = ("q", "k", "v", "o", "gate", "up", "down")  # LLaMA-family projection names without "_proj"
LR_DECAY_HELP = (
    "with --max-time alone: after 10 warm-up steps the learning rate falls linearly to 0 at the time limit "
    "(--no-lr-decay: held; a --max-steps run always decays over its steps)"
)


@dataclass(frozen=True)
class TrainOptions:
    """Everything a user sets on the command line for a training run (pretrain and finetune alike).
    Frozen: a run resolves its plan into a new object (`dataclasses.replace`), never edits this one."""

    output: Path = option(help="folder for the trained, merged model (and OUTPUT-checkpoints)")
    model: str = settings.model()
    max_steps: int | None = option(None, "optimizer steps")
    max_time: float | None = option(None, "minutes; stop, checkpoint and save when reached")
    lr: float = option(1e-4, "learning rate (LoRA weights, or all weights with --full)")
    # The new special-token embeddings barely move at the LoRA rate.
    special_lr: float = option(1e-3, "learning rate of the special-token embeddings")
    train_batch_size: int = option(
        8,
        "training rows per device per step (pretrain: a text chunk; finetune: a query with its passages)",
        deprecated=("--batch-size",),
    )
    grad_accum: int = option(1, "gradient accumulation steps")
    precision: Precision = settings.precision()
    text_case: TextCase | None = settings.text_case()
    save_every: int = option(200, "steps between checkpoints")
    save_at_minutes: list[float] = option(
        help="also checkpoint at these minutes, e.g. 3,12",
        factory=list,
        parse=lambda text: comma_numbers(text, "--save-at-minutes"),
        show=joined,
    )
    resume: bool = option(False, "continue from the last checkpoint of this output")
    seed: int = settings.seed(42)
    full: bool = option(False, "full fine-tuning instead of LoRA")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA scaling (alpha)")
    lora_dropout: float = option(0.05, "dropout on LoRA inputs")
    lora_targets: list[str] = option(
        help="comma-separated modules", factory=lambda: list(LORA_SHORT), parse=comma_names, show=joined
    )
    lr_decay: bool = option(False, LR_DECAY_HELP)
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    deepspeed: str | None = option(None, "DeepSpeed JSON config (see configs/)")
    logging_steps: int = option(5, "steps between loss logs")
    # How fast a step runs (training/speed.py, benchmarks/bench_train_throughput.py); all False gives
    # the step of llara before them. Each keeps the math (tests/test_train_speed.py).
    bf16_base: bool = option(
        True,
        "LoRA in bf16 on a CPU: hold the frozen projection weights in bf16 rather than have autocast cast "
        "them on every pass (the same values, less time and memory; --no-bf16-base: as llara trained before)",
    )
    cpu_attention: bool = True  # on a CPU: eager attention, not SDPA's flash kernel; pretraining rows packed
    lean_lora: bool = True  # special-token rows trained without the whole embedding matrix; LoRA updates as addmm
    cheap_dropout: bool = True  # on a CPU: LoRA dropout masks from 16-bit draws of a fast generator, not bernoulli
    # The one switch: False takes PEFT's and transformers' own paths for all four above. Each also runs
    # only where tests prove it (training.common.fast_path): a CPU, no DeepSpeed, tested versions.
    fast_paths: bool = option(
        True,
        "llara's faster training layers where tests prove them (a CPU, no DeepSpeed, tested versions); "
        "--no-fast-paths: PEFT's and transformers' own everywhere",
    )
    keep_checkpoints: int = option(
        2, "keep the newest N checkpoints, each verified on disk before older ones go (0: keep all)"
    )  # --save-at-minutes ones always stay
    trust_remote_code: bool = settings.trust_remote_code()

    def validate(self) -> None:
        if self.max_steps is None and self.max_time is None:
            raise LlaraError("give --max-steps or --max-time (or both)")
        if self.keep_checkpoints < 0:
            raise LlaraError(f"--keep-checkpoints must be 0 (all) or more, got {self.keep_checkpoints}")
        positive = ("lr", "special_lr", "train_batch_size", "grad_accum", "save_every", "lora_r")
        for name in (*positive, "max_steps", "max_time"):
            value = getattr(self, name)
            # finite as well: `value <= 0` let NaN through (a NaN learning rate trains nothing)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise LlaraError(f"--{name.replace('_', '-')} must be positive, got {value}")
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
