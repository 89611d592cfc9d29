"""The settings of `llara finetune` (contrastive fine-tuning): one dataclass, its defaults the CLI's."""

from __future__ import annotations

from dataclasses import dataclass

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
    "profile",
)


# The fine-tuning defaults come in two profiles, picked by the device the run trains on; a flag given
# on the command line always wins. Where they came from: benchmarks/RESULTS.md.
PROFILES: dict[str, dict] = {
    # The paper's 7B GPU recipe (docs/method.md): 15 hard negatives a query, 64/160 tokens, LoRA rate 3e-4.
    "gpu": {"group_size": 16, "query_max_length": 64, "passage_max_length": 160, "lr": 3e-4},
    # Sized for a CPU: one hard negative a query (the batch's other passages are negatives too), short
    # texts and a high LoRA rate, so that 12 minutes on 2 cores make ~110 steps instead of one.
    "cpu": {"group_size": 2, "query_max_length": 32, "passage_max_length": 128, "lr": 1e-3},
}
FULL_LR = 1e-5  # full fine-tuning (every weight) wants a far lower rate than LoRA, on either profile


def profile_for(device: str) -> str:
    """The profile of fine-tuning defaults for a device (``cpu``, ``cuda:0``, ...)."""
    return "cpu" if device.split(":")[0] == "cpu" else "gpu"


# DeepSpeed steps its optimizer inside every backward call it is given (accelerate's engine wrapper),
# and GradCache back-propagates chunk by chunk: the two cannot share a step.
GRAD_CACHE_DEEPSPEED = (
    "--grad-cache does not run under --deepspeed (DeepSpeed steps the optimizer at each backward, GradCache "
    "needs one per chunk): use --gradient-checkpointing, a smaller --batch-size, or DDP (torchrun alone)"
)


@dataclass
class FinetuneOptions(TrainOptions):
    """TrainOptions plus what is specific to contrastive fine-tuning. Settings left None take the
    defaults of the device's profile (PROFILES) when the run starts (`resolve`); `plan_finetune` then
    fits the step to the machine's memory."""

    lr: float | None = None  # None: the profile's LoRA rate, or FULL_LR with --full
    recipe: str | None = None  # None: the model's own, else reference
    group_size: int | None = None  # passages per query: 1 positive + group_size - 1 negatives
    temperature: float = 0.01
    query_max_length: int | None = None
    passage_max_length: int | None = None
    negatives_cross_device: bool = False
    grad_cache: bool = False
    chunk_size: int = 8  # texts per GradCache chunk
    profile: str | None = None  # which PROFILES entry filled the unset settings (set by `resolve`)

    def resolve(self, device: str | None = None) -> FinetuneOptions:
        """Fill every unset setting from the profile of `device` (default: the one this process trains
        on) in place; returns self."""
        if device is None:
            from llara.modeling.loading import device_of_rank  # torch: not at CLI start-up

            device = device_of_rank()
        self.profile = self.profile or profile_for(device)
        for key, value in PROFILES[self.profile].items():
            if getattr(self, key) is None:
                setattr(self, key, FULL_LR if key == "lr" and self.full else value)
        return self

    def validate(self) -> None:
        if None in (self.lr, self.group_size, self.query_max_length, self.passage_max_length):
            raise ValueError("call resolve(device) before validate()")
        super().validate()
        if self.group_size < 1:
            raise LlaraError(f"--group-size must be at least 1, got {self.group_size}")
        if self.temperature <= 0:
            raise LlaraError(f"--temperature must be positive, got {self.temperature}")
        if self.chunk_size < 1:
            raise LlaraError(f"--chunk-size must be at least 1, got {self.chunk_size}")
        if self.grad_cache and self.deepspeed:
            raise LlaraError(GRAD_CACHE_DEEPSPEED)

    def contrastive(self) -> dict:
        """The fine-tuning settings recorded in the model's llara.json."""
        return {k: getattr(self, k) for k in CONTRASTIVE}
