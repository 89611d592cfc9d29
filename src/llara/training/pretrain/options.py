"""The settings of `llara pretrain` (EBAE + EBAR adaptation): one dataclass, its fields the command's options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llara.settings import option
from llara.training.options import LR_DECAY_HELP, TrainOptions


@dataclass(frozen=True)
class PretrainOptions(TrainOptions):
    """TrainOptions plus what is specific to adaptation on plain text."""

    corpus: Path | None = option(
        None,
        '.txt (blank-line separated), JSONL {"text"} / {"title","text"} / BEIR corpus.jsonl, '
        'or reference rows {"input","output_summarize","output_predict"}',
        required=True,
    )
    # No LoRA dropout: its masks cost ~1.3x step time on CPU (benchmarks/bench_lora_dropout.py).
    lora_dropout: float = option(0.0, "dropout on LoRA inputs")
    # Held at its rate, adaptation's zero-shot retrieval peaks in the first minutes and then falls while the
    # loss still falls (benchmarks/RESULTS.md, issue 23): the rate decays to 0 over the time budget.
    lr_decay: bool = option(True, LR_DECAY_HELP)
    # pretraining needs "last" pooling and one prefix shared by both prompts
    recipe: str = option("reference", "a built-in recipe name (reference | paper) or a recipe file (TOML/JSON)")
    chunk_tokens: int = option(
        128, "tokens per joint training row: prefix + text + both suffixes (reference cutoff_len)"
    )
    lm_loss: bool = option(
        False,
        "add the next-token LM loss on the passage, as the reference code does (off by default: on small "
        "models it swamps the bag-of-words terms; benchmarks/RESULTS.md)",
    )
    remove_stop_words: bool = option(
        False, "drop punctuation and NLTK English stop words from the bag-of-words targets"
    )
    # Off by default: on the suite it helped ADI and cost CACM about as much (benchmarks/RESULTS.md, issue 23).
    halve_short: bool = option(
        False,
        "split a document of several sentences that fits one chunk in two at a sentence boundary, so that EBAR "
        "has a next passage to predict on short documents too",
    )
    shuffle_buffer: int = 2048  # documents shuffled together while streaming the corpus
