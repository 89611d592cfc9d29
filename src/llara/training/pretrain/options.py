"""The settings of `llara pretrain` (EBAE + EBAR adaptation): one dataclass, its defaults the CLI's."""

from __future__ import annotations

from dataclasses import dataclass

from llara.training.options import TrainOptions


@dataclass
class PretrainOptions(TrainOptions):
    """TrainOptions plus what is specific to adaptation on plain text."""

    # No LoRA dropout: its masks cost ~1.3x step time on CPU (benchmarks/bench_lora_dropout.py).
    lora_dropout: float = 0.0
    recipe: str = "reference"  # a built-in name or a recipe file; pretraining needs "last" pooling
    chunk_tokens: int = 128  # tokens per joint training row: prefix + text + both suffixes (reference cutoff_len)
    # The next-token LM loss on the passage, as the reference code adds; off: on small models it swamps
    # the bag-of-words terms (benchmarks/RESULTS.md).
    lm_loss: bool = False
    remove_stop_words: bool = False  # drop punctuation and NLTK English stop words from the bag-of-words targets
    shuffle_buffer: int = 2048  # documents shuffled together while streaming the corpus
