"""How a job's settings become command-line options: declared once, on the job's dataclass.

Every `llara` command is generated from one dataclass (`EncodeOptions`, `FinetuneOptions`,
`ServeOptions`, ...): a field declared with `option(...)` is a command-line option, named after the
field (`passage_max_length` -> `--passage-max-length`), typed by the field's annotation (an `Enum`
gives its choices, checked before anything loads), with the field's default and `help`. A field
declared with plain `field()` or a bare default is a setting the command line does not take.

The options several jobs take (the model, the recipe, precision, encoding batches, ...) are declared
here once, as functions that return the field, so that one name has one meaning and one default
everywhere. This module imports nothing heavy: `llara --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import StrEnum
from typing import Any

DEFAULT_MODEL = "smollm2"  # the built-in SmolLM2-135M-Instruct
ENCODE_BATCH_SIZE = 32  # texts per forward pass when encoding (encode, search, evaluate, mine, serve)
TOP_K = 1000  # documents retrieved per query (the TREC and BEIR convention)
# The lengths a model encodes at, prompt included, unless its llara.json or a flag says otherwise. Queries
# get as many tokens as passages (the authors' model cards encode both at up to 512): the reference's
# training length (64) cut 91% of LISA's judged queries and 54% of CISI's, and reading them whole raised
# the suite's dense macro nDCG@10 0.502 -> 0.512 with no retraining (benchmarks/RESULTS.md, "Queries read
# whole"). Passages: docs/method.md.
QUERY_MAX_LENGTH = 256
PASSAGE_MAX_LENGTH = 256
SPEC = "llara.option"  # the dataclass field metadata key


class Precision(StrEnum):
    auto = "auto"  # bf16 where the hardware runs it natively, else fp32
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Method(StrEnum):
    dense = "dense"
    bm25 = "bm25"
    hybrid = "hybrid"


class LongDocuments(StrEnum):
    split = "split"  # passages of the passage length (a quarter overlapping), the title in each; MaxP
    truncate = "truncate"  # the first passage-length tokens only


class TextCase(StrEnum):
    fold_capitals = "fold-capitals"  # a long text with no lower-case letter is read in lower case
    as_given = "as-given"  # every text as written (the reference code's reading)


TEXT_CASES = tuple(TextCase)  # for membership tests (`str in StrEnum` raises on Python 3.11)


class FusionMethod(StrEnum):
    auto = "auto"
    rrf = "rrf"
    score = "score"


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """How a field is spelled and read on the command line."""

    help: str
    flag: str | None = None  # default: --field-name
    short: str | None = None  # e.g. -m
    required: bool = False  # the command line must give it (the field's own default is for Python callers)
    argument: bool = False  # positional, not --flag
    envvar: str | None = None
    deprecated: tuple[str, ...] = ()  # old spellings, accepted for one release with a warning
    parse: Callable[[str], Any] | None = None  # the command line gives text (e.g. "q,k,v") that this reads
    show: Callable[[Any], str] | None = None  # the default as that text


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None, **spec):
    """A dataclass field that is also a command-line option (see OptionSpec for `spec`)."""
    if not help:
        raise TypeError("an option needs its help text")
    metadata = {SPEC: OptionSpec(help=help, **spec)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def spec_of(f: dataclasses.Field) -> OptionSpec | None:
    return f.metadata.get(SPEC)


def flag_of(f: dataclasses.Field) -> str:
    spec = spec_of(f)
    return (spec and spec.flag) or "--" + f.name.replace("_", "-")


def comma_names(text: str) -> list[str]:
    """ "q, k,v" -> ["q", "k", "v"]."""
    return [t.strip() for t in text.split(",") if t.strip()]


def comma_numbers(text: str, flag: str = "option") -> list[float]:
    """ "3,12" -> [3.0, 12.0]; "" -> []."""
    from llara.errors import LlaraError

    try:
        return [float(m) for m in text.split(",") if m.strip()]
    except ValueError:
        raise LlaraError(f"{flag}: not a list of numbers: {text!r}") from None


def joined(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


# ---------------------------------------------------------------- the options several jobs share


def model(default: str = DEFAULT_MODEL, help: str = "built-in name (smollm2), a .gguf file or a HF folder"):
    return option(default, help, short="-m")


def recipe(default: str | None = None):
    return option(
        default,
        "a built-in recipe name (reference | paper | repllama | mean) or a recipe file (TOML/JSON); "
        "default: the model's own, else reference",
    )


def text_case():
    return option(
        None,
        "how a text in capitals only (no lower-case letter, 20+ letters) is read: fold-capitals (in lower case) | "
        "as-given (as written, like the reference code); default: the model's own, else fold-capitals",
    )


def precision():
    return option(Precision.auto, "compute precision (auto: bf16 where the hardware runs it natively, else fp32)")


def trust_remote_code():
    return option(False, "run Python code shipped with the model (trusted folders only)")


def batch_size():
    return option(ENCODE_BATCH_SIZE, "texts per forward pass when encoding")


def max_tokens_per_batch():
    return option(None, "token budget per encoding batch (rows x longest row) instead of --batch-size")


def query_max_length():
    return option(None, f"query tokens, prompt included (default: the model's llara.json, else {QUERY_MAX_LENGTH})")


def passage_max_length():
    return option(None, f"passage tokens, prompt included (default: the model's llara.json, else {PASSAGE_MAX_LENGTH})")


def long_documents():
    return option(
        LongDocuments.split,
        "a document longer than --passage-max-length: split (into overlapping passages of that length, "
        "the title in each; a document scores its best passage) or truncate (its first tokens only)",
    )


def top_k():
    return option(TOP_K, "documents retrieved per query")


def seed(default: int):
    return option(default, "random seed")


def fusion(default: FusionMethod | None = None):
    return option(
        default,
        "--method hybrid: auto (default: min-max score fusion, the dense weight chosen on held-out weak pairs of the "
        "corpus, 0 = BM25 alone), rrf (reciprocal rank fusion, k=60, equal weights) or score (min-max)",
    )


def fusion_weight():
    return option(None, "--fusion rrf or score: weight of the dense run, BM25 gets 1 - W (default: equal)")


def ef_search():
    return option(None, "HNSW search beam (default: the index's)")


def nprobe():
    return option(None, "IVF cells searched, ivf and ivfpq (default: the index's)")


def metrics(default, parse: Callable[[str], list[str]] = comma_names):
    return option(help="comma-separated ir-measures names", factory=lambda: list(default), parse=parse, show=joined)


def rank_range(default: str, what: str):
    return option(default, f"{what} ranked positions start-end to sample negatives from", flag="--range")


def negatives(default: int, what: str):
    return option(default, f"{what} hard negatives per query")


# ------------------------------------------------- one name, one meaning (tests/test_options.py)
# Every flag that more than one command takes means this one thing in each of them (the CLI reference
# prints this table). A name that meant two things was renamed; the old spelling is a deprecated alias.
MEANINGS: dict[str, str] = {
    "--model": "the model: a built-in name (smollm2), a .gguf file or a HF folder",
    "--recipe": "the prompts, special tokens and pooling: a built-in name or a recipe file",
    "--precision": "compute precision: auto | fp32 | bf16 | fp16",
    "--text-case": "how a text in capitals only is read: fold-capitals | as-given",
    "--trust-remote-code": "run Python code shipped with the model",
    "--batch-size": "texts per forward pass when encoding",
    "--max-tokens-per-batch": "token budget per encoding batch, instead of --batch-size",
    "--query-max-length": "query tokens, prompt included",
    "--passage-max-length": "passage tokens, prompt included",
    "--top-k": "documents retrieved per query",
    "--long-documents": "a document longer than the passage length: split into passages (searched by its best "
    "one; fine-tuned on the one its query is about) or truncate",
    "--method": "how documents are ranked: dense, bm25 (or hybrid: both fused)",
    "--fusion": "how a hybrid fuses BM25 and dense runs: auto | rrf | score",
    "--fusion-weight": "the dense run's weight in a fusion",
    "--ef-search": "the HNSW search beam",
    "--nprobe": "IVF cells searched",
    "--index": "a folder written by `llara index`",
    "--corpus": "a corpus file (BEIR corpus.jsonl; pretrain also takes .txt and other JSONL rows)",
    "--data": "a dataset folder in BEIR layout",
    "--split": "which qrels/<split>.tsv is read",
    "--train": 'a JSONL training file of {"query", "pos", "neg"} rows',
    "--output": "where the command writes its result (a file or a folder, as its help says)",
    "--resume": "finish an interrupted run of the same output",
    "--seed": "random seed",
    "--negatives": "hard negatives per query",
    "--range": "ranked positions start-end that negatives are sampled from",
    "--metrics": "comma-separated ir-measures names",
    "--pretrain-minutes": "the EBAE + EBAR adaptation budget, in minutes",
    "--finetune-minutes": "the budget of a fine-tuning run, in minutes",
    "--train-batch-size": "training rows per device per optimizer step (before --grad-accum)",
    "--grad-accum": "gradient accumulation steps",
    "--lr": "the learning rate",
    "--special-lr": "the learning rate of the special-token embeddings",
    "--max-steps": "optimizer steps",
    "--max-time": "minutes of training; stop, checkpoint and save when reached",
    "--lr-decay": "with --max-time alone, let the learning rate fall linearly to 0 at the time limit",
    "--full": "train every weight instead of LoRA",
    "--lora-r": "LoRA rank",
    "--lora-alpha": "LoRA scaling",
    "--lora-dropout": "dropout on LoRA inputs",
    "--lora-targets": "the modules LoRA adapts",
    "--gradient-checkpointing": "recompute activations in the backward pass",
    "--bf16-base": "hold LoRA's frozen weights in bf16 on a CPU",
    "--fast-paths": "llara's faster training layers where tests prove them",
    "--deepspeed": "a DeepSpeed JSON config",
    "--save-every": "steps between checkpoints",
    "--save-at-minutes": "also checkpoint at these minutes",
    "--keep-checkpoints": "how many newest checkpoints stay",
    "--logging-steps": "steps between loss logs",
}
