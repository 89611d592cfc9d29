"""The settings of `llara finetune` (contrastive fine-tuning): one dataclass, its fields the command's options."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from llara import settings
from llara.errors import LlaraError
from llara.settings import option
from llara.training.options import TrainOptions

CONTRASTIVE = (  # what is specific to fine-tuning, recorded in the model's llara.json
    "group_size",
    "temperature",
    "query_max_length",
    "passage_max_length",
    "long_documents",
    "epochs",
    "negatives_cross_device",
    "grad_cache",
    "grad_cache_chunk",
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
# How fine-tuning reads a passage longer than its length (benchmarks/RESULTS.md, "Fine-tuning on the
# passages the index holds").
LONG_DOCUMENTS = settings.LongDocuments.truncate
# Passes over the training rows before a run stops, whatever time is left (None: time and steps alone).
EPOCHS: float | None = None


def profile_for(device: str) -> str:
    """The profile of fine-tuning defaults for a device (``cpu``, ``cuda:0``, ...)."""
    return "cpu" if device.split(":")[0] == "cpu" else "gpu"


# DeepSpeed steps its optimizer inside every backward call it is given (accelerate's engine wrapper),
# and GradCache back-propagates chunk by chunk: the two cannot share a step.
GRAD_CACHE_DEEPSPEED = (
    "--grad-cache does not run under --deepspeed (DeepSpeed steps the optimizer at each backward, GradCache "
    "needs one per chunk): use --gradient-checkpointing, a smaller --batch-size, or DDP (torchrun alone)"
)


def _by_device(key: str) -> str:
    """A default that depends on the device (PROFILES), for --help."""
    return f"(default: {PROFILES['cpu'][key]:g} on a CPU, {PROFILES['gpu'][key]:g} on a GPU)"


@dataclass(frozen=True)
class FinetuneOptions(TrainOptions):
    """TrainOptions plus what is specific to contrastive fine-tuning. Settings left None take the
    defaults of the device's profile (PROFILES) when the run resolves its plan (`resolve`, a new
    object); `plan_finetune` then fits the step to the machine's memory."""

    train: Path | None = option(None, 'JSONL rows {"query", "pos": [...], "neg": [...]}', required=True)
    # None: the profile's LoRA rate, or FULL_LR with --full
    lr: float | None = option(None, f"learning rate {_by_device('lr')}; {FULL_LR:g} with --full")
    recipe: str | None = settings.recipe()
    group_size: int | None = option(
        None, f"passages per query: 1 positive + group-size - 1 negatives {_by_device('group_size')}"
    )
    temperature: float = option(0.01, "InfoNCE temperature")
    query_max_length: int | None = option(
        None, f"query tokens, prompt included (saved: the model encodes with it) {_by_device('query_max_length')}"
    )
    passage_max_length: int | None = option(
        None,
        f"passage tokens, prompt included (saved: the model encodes with it) {_by_device('passage_max_length')}",
    )
    long_documents: settings.LongDocuments = option(
        LONG_DOCUMENTS,
        "a training passage longer than --passage-max-length: split (cut as the index cuts a long document, "
        "into overlapping passages of that length; the one sharing most words with the query is trained on) or "
        "truncate (its first tokens)",
    )
    epochs: float | None = option(
        EPOCHS,
        "stop after this many passes over the training rows, even with --max-time left (a small corpus is "
        "otherwise seen again and again)",
    )
    negatives_cross_device: bool = option(False, "with torchrun: every query also sees the other ranks' passages")
    grad_cache: bool = option(False, "GradCache: big batches, one chunk's activations at a time")
    grad_cache_chunk: int = option(8, "texts per GradCache chunk", deprecated=("--chunk-size",))
    profile: str | None = None  # which PROFILES entry filled the unset settings (set by `resolve`)

    def resolve(self, device: str | None = None) -> FinetuneOptions:
        """These settings with every unset one filled from the profile of `device` (default: the one
        this process trains on): a new object, this one unchanged."""
        if device is None:
            from llara.modeling.loading import device_of_rank  # torch: not at CLI start-up

            device = device_of_rank()
        profile = self.profile or profile_for(device)
        filled = {
            key: FULL_LR if key == "lr" and self.full else value
            for key, value in PROFILES[profile].items()
            if getattr(self, key) is None
        }
        return replace(self, profile=profile, **filled)

    def validate(self) -> None:
        if None in (self.lr, self.group_size, self.query_max_length, self.passage_max_length):
            raise ValueError("call resolve(device) before validate()")
        super().validate()
        if self.group_size < 1:
            raise LlaraError(f"--group-size must be at least 1, got {self.group_size}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):  # NaN included
            raise LlaraError(f"--temperature must be positive, got {self.temperature}")
        if self.epochs is not None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise LlaraError(f"--epochs must be positive, got {self.epochs:g}")
        if self.grad_cache_chunk < 1:
            raise LlaraError(f"--grad-cache-chunk must be at least 1, got {self.grad_cache_chunk}")
        if self.grad_cache and self.deepspeed:
            raise LlaraError(GRAD_CACHE_DEEPSPEED)

    def contrastive(self) -> dict:
        """The fine-tuning settings recorded in the model's llara.json."""
        return {k: getattr(self, k) for k in CONTRASTIVE}
