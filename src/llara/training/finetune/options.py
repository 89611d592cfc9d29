"""The settings of `llara finetune` (contrastive fine-tuning): one dataclass, its defaults the CLI's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from llara.errors import LlaraError
from llara.training.options import TrainOptions

CONTRASTIVE = (  # what is specific to fine-tuning, recorded in the model's llara.json
    "group_size",
    "temperature",
    "query_max_length",
    "passage_max_length",
    "negatives_cross_device",
    "grad_cache",
    "chunk_size",
)


@dataclass
class FinetuneOptions(TrainOptions):
    """TrainOptions plus what is specific to contrastive fine-tuning. The defaults are the 7B GPU recipe's;
    `plan_finetune` fits the step to the memory of the machine it runs on."""

    LORA_LR: ClassVar[float] = 3e-4  # the reference's LoRA rate
    FULL_LR: ClassVar[float] = 1e-5  # full weights need far less

    lr: float | None = None  # None: LORA_LR, or FULL_LR with --full
    recipe: str | None = None  # None: the model's own, else reference
    group_size: int = 16  # passages per query: 1 positive + group_size - 1 negatives
    temperature: float = 0.01
    query_max_length: int = 64
    passage_max_length: int = 160
    negatives_cross_device: bool = False
    grad_cache: bool = False
    chunk_size: int = 8  # texts per GradCache chunk

    def __post_init__(self) -> None:
        if self.lr is None:
            self.lr = self.FULL_LR if self.full else self.LORA_LR

    def validate(self) -> None:
        super().validate()
        if self.group_size < 1:
            raise LlaraError(f"--group-size must be at least 1, got {self.group_size}")
        if self.temperature <= 0:
            raise LlaraError(f"--temperature must be positive, got {self.temperature}")
        if self.chunk_size < 1:
            raise LlaraError(f"--chunk-size must be at least 1, got {self.chunk_size}")

    def contrastive(self) -> dict:
        """The fine-tuning settings recorded in the model's llara.json."""
        return {k: getattr(self, k) for k in CONTRASTIVE}
