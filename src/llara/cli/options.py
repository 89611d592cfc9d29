"""What the commands share: the stderr console, and every option that several commands take, declared once.

An option's default is not here: each command sets it from the settings dataclass of its job
(`PretrainOptions.lr`, `ServeOptions.port`, ...), so that a default has one home.
"""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from llara.errors import LlaraError

console = Console(stderr=True)  # progress and "wrote ..." lines; results go to stdout

ENCODE_BATCH_SIZE = 32  # texts per forward pass when encoding (evaluate, encode, search, mine)


class Method(StrEnum):
    dense = "dense"
    bm25 = "bm25"
    hybrid = "hybrid"


class FusionMethod(StrEnum):
    auto = "auto"
    rrf = "rrf"
    score = "score"


# --- models and encoding
Model = Annotated[str, typer.Option("--model", "-m", help="built-in name (smollm2), a .gguf file or a HF folder")]
Recipe = Annotated[
    str | None,
    typer.Option(
        help="a built-in recipe name (reference | paper | repllama | mean) or a recipe file (TOML/JSON); "
        "default: the model's own, else reference"
    ),
]
QueryLength = Annotated[
    int | None, typer.Option(help="query tokens, prompt included (default: the model's llara.json, else 64)")
]
PassageLength = Annotated[
    int | None, typer.Option(help="passage tokens, prompt included (default: the model's llara.json, else 256)")
]
Precision = Annotated[
    str, typer.Option(help="auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)")
]
TrustRemoteCode = Annotated[bool, typer.Option(help="run Python code shipped with the model (trusted folders only)")]
BatchSize = Annotated[int, typer.Option(help="texts per forward pass")]
MaxTokensPerBatch = Annotated[
    int | None, typer.Option(help="token budget per batch (rows x longest row) instead of --batch-size")
]
Seed = Annotated[int, typer.Option(help="random seed")]

# --- retrieval
TopK = Annotated[int, typer.Option(help="documents retrieved per query")]
Fusion = Annotated[
    FusionMethod | None,
    typer.Option(
        "--fusion",
        help="--method hybrid: auto (default: weighted RRF, the dense weight chosen on held-out weak pairs of the "
        "corpus, 0 = BM25 alone), rrf (reciprocal rank fusion, k=60, equal weights) or score (min-max)",
    ),
]
FusionWeight = Annotated[
    float | None,
    typer.Option(help="--fusion rrf or score: weight of the dense run, BM25 gets 1 - W (default: equal)"),
]
EfSearch = Annotated[int | None, typer.Option(help="HNSW search beam (default: the index's)")]
Nprobe = Annotated[int | None, typer.Option(help="IVF cells searched, ivf and ivfpq (default: the index's)")]
Metrics = Annotated[str, typer.Option(help="comma-separated ir-measures names")]

# --- training (pretrain and finetune)
MaxSteps = Annotated[int | None, typer.Option(help="optimizer steps")]
MaxTime = Annotated[float | None, typer.Option(help="minutes; stop, checkpoint and save when reached")]
SpecialLr = Annotated[float, typer.Option(help="learning rate of the special-token embeddings")]
GradAccum = Annotated[int, typer.Option(help="gradient accumulation steps")]
Full = Annotated[bool, typer.Option(help="full fine-tuning instead of LoRA")]
LoraR = Annotated[int, typer.Option(help="LoRA rank")]
LoraAlpha = Annotated[int, typer.Option(help="LoRA scaling (alpha)")]
LoraDropout = Annotated[float, typer.Option(help="dropout on LoRA inputs")]
GradientCheckpointing = Annotated[bool, typer.Option(help="recompute activations in the backward pass (less memory)")]
Bf16Base = Annotated[
    bool,
    typer.Option(
        help="LoRA in bf16 on a CPU: hold the frozen projection weights in bf16 rather than have autocast cast "
        "them on every pass (the same values, less time and memory; --no-bf16-base: as llara trained before)"
    ),
]
FastPaths = Annotated[
    bool,
    typer.Option(
        help="llara's faster training layers where tests prove them (a CPU, no DeepSpeed, tested versions); "
        "--no-fast-paths: PEFT's and transformers' own everywhere"
    ),
]
SaveEvery = Annotated[int, typer.Option(help="steps between checkpoints")]
KeepCheckpoints = Annotated[
    int,
    typer.Option(help="keep the newest N checkpoints, each verified on disk before older ones go (0: keep all)"),
]
LoggingSteps = Annotated[int, typer.Option(help="steps between loss logs")]
Resume = Annotated[bool, typer.Option(help="continue from the last checkpoint of this output")]
DeepSpeed = Annotated[str | None, typer.Option(help="DeepSpeed JSON config (see configs/)")]


def numbers(option: str, text: str) -> list[float]:
    """ "3,12" -> [3.0, 12.0]; "" -> []."""
    try:
        return [float(m) for m in text.split(",") if m.strip()]
    except ValueError:
        raise LlaraError(f"{option}: not a list of numbers: {text!r}") from None


def names(text: str) -> list[str]:
    """ "q, k,v" -> ["q", "k", "v"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


def settings(cls: type, params: dict, **converted):
    """A settings dataclass from a command's parameters (those that are its fields), some converted first."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in {**params, **converted}.items() if k in fields})
