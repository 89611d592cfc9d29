"""Fine-tuning data: {"query", "pos": [...], "neg": [...]} rows (FlagEmbedding / Tevatron format).

Each example is one query with one sampled positive and `group_size - 1` sampled hard negatives.
Sampling depends only on (seed, epoch, index), so a resumed or repeated run sees the same groups.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from llara.data.beir import format_document
from llara.data.io import Odd, bad_rows, get_str, iter_records
from llara.errors import LlaraError
from llara.modeling.prompts import PromptBuilder

log = logging.getLogger(__name__)

EMPTY_PASSAGES: Odd = ("row with empty passages (left out of it)", "rows with empty passages (left out of them)")


@dataclass
class TrainExample:
    query: str
    pos: list[str]
    neg: list[str]


def _passages(row: dict, field: str, path: Path, line: int) -> list[str]:
    """A list of passages: strings, or Tevatron-style {"title", "text"} objects."""
    value = row.get(field, [])
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list):
        raise LlaraError(f"expected a list of passages, got {type(value).__name__}", path, line, field)
    out = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("text", ""), str) and isinstance(item.get("title", ""), str):
            item = format_document(item)
        if not isinstance(item, str):
            raise LlaraError(f"expected a string passage, got {type(item).__name__}", path, line, field)
        out.append(item)
    return out


def parse_row(row: dict, path: Path, line: int) -> TrainExample:
    query = get_str(row, "query", path, line)
    given = _passages(row, "pos", path, line), _passages(row, "neg", path, line)
    pos, neg = ([p for p in passages if p.strip()] for passages in given)
    if not pos:
        raise LlaraError("no positive passage", path, line, "pos")
    if len(pos) + len(neg) < sum(map(len, given)):  # nothing to encode; the rest of the row still trains
        bad_rows().note(EMPTY_PASSAGES, path, line)
    return TrainExample(query, pos, neg)


def read_train_file(path: str | Path) -> list[TrainExample]:
    """Validate every row before training starts: a bad row names its file and line
    (or, under --skip-bad-rows, is counted and skipped)."""
    path = Path(path)
    examples = list(iter_records(path, parse_row))
    if not examples:
        raise LlaraError("no training rows", path)
    return examples


class TrainDataset(Dataset):
    """Item i of epoch e: (query, [positive, negative_1, ..., negative_{group_size-1}])."""

    def __init__(self, examples: list[TrainExample], group_size: int = 16, seed: int = 42, path=None) -> None:
        if group_size < 1:
            raise LlaraError(f"--group-size must be at least 1, got {group_size}")
        self.examples, self.seed, self.epoch = examples, seed, 0
        self.group_size = group_size
        missing = sum(1 for e in examples if not e.neg)
        if group_size > 1 and missing:
            if missing == len(examples):
                log.warning("%s has no hard negatives: training with in-batch negatives only", path or "the data")
                self.group_size = 1
            else:
                log.warning(
                    "%d of %d rows have no hard negatives: they get random passages from other rows instead",
                    missing,
                    len(examples),
                )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[str, list[str]]:
        ex = self.examples[i]
        rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
        pos = ex.pos[rng.randrange(len(ex.pos))]
        k = self.group_size - 1
        pool = ex.neg
        if not pool and k > 0:  # a row without negatives in a mixed file: other rows' positives
            others = [j for j in rng.sample(range(len(self.examples)), min(len(self.examples), k + 1)) if j != i]
            pool = [self.examples[j].pos[0] for j in others[:k]] or ex.pos
        if k <= 0:
            negs = []
        elif len(pool) >= k:
            negs = rng.sample(pool, k)
        else:  # too few: every negative once, then repeats
            negs = pool + rng.choices(pool, k=k - len(pool))
        return ex.query, [pos, *negs]


class ContrastiveCollator:
    """Tokenises a batch with the recipe's prompts: queries the EBAR side, passages the EBAE side."""

    def __init__(self, prompts: PromptBuilder, query_max_length: int = 64, passage_max_length: int = 160) -> None:
        self.prompts = prompts
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length

    def __call__(self, batch: list[tuple[str, list[str]]]) -> dict[str, dict[str, torch.Tensor]]:
        queries = [q for q, _ in batch]
        passages = [p for _, group in batch for p in group]  # query i's positive sits at i * group_size
        return {
            "query": self.prompts.pad(self.prompts.build(queries, "query", self.query_max_length)),
            "passage": self.prompts.pad(self.prompts.build(passages, "passage", self.passage_max_length)),
        }
