"""Fine-tuning data: {"query", "pos": [...], "neg": [...]} rows (FlagEmbedding / Tevatron format).

Each example is one query with one sampled positive and `group_size - 1` sampled hard negatives.
Sampling depends only on (seed, epoch, index), so a resumed or repeated run sees the same groups.
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
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


Passage = str | dict[str, str]  # a text, or a Tevatron-style {"title", "text"} (its title carried into each window)


@dataclass
class TrainExample:
    query: str
    pos: list[Passage]
    neg: list[Passage]


def _passages(row: dict, field: str, path: Path, line: int) -> list[Passage]:
    """A list of passages: strings, or Tevatron-style {"title", "text"} objects (kept as such)."""
    value = row.get(field, [])
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list):
        raise LlaraError(f"expected a list of passages, got {type(value).__name__}", path, line, field)
    out: list[Passage] = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("text", ""), str) and isinstance(item.get("title", ""), str):
            item = {"title": item.get("title") or "", "text": item.get("text") or ""}
        elif not isinstance(item, str):
            raise LlaraError(f"expected a string passage, got {type(item).__name__}", path, line, field)
        out.append(item)
    return out


def parse_row(row: dict, path: Path, line: int) -> TrainExample:
    query = get_str(row, "query", path, line)
    given = _passages(row, "pos", path, line), _passages(row, "neg", path, line)
    pos, neg = ([p for p in passages if format_document(p).strip()] for passages in given)
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

    def __getitem__(self, i: int) -> tuple[str, list[Passage]]:
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


WORD = re.compile(r"\w{3,}")


def best_window(query: str, windows: list[str]) -> str:
    """The window of a long passage that a query is about: the one sharing the most distinct words (of 3+
    characters, any case) with it, the first on a tie. No model and no labels: the positive of a weak pair
    (a sentence cut from its document, or a title) lands on the neighbourhood it came from, and a hard
    negative on its part closest to the query, as MaxP search would score it."""
    words = set(WORD.findall(query.lower()))
    return max(windows, key=lambda w: len(words.intersection(WORD.findall(w.lower()))))


class ContrastiveCollator:
    """Tokenises a batch with the recipe's prompts: queries the EBAR side, passages the EBAE side.

    With `split`, a passage longer than `passage_max_length` is cut into the windows the index would hold
    for it (PromptBuilder.passages, as `--long-documents split` encodes a document) and the one the query is
    about (`best_window`) is trained on, instead of the passage's first tokens."""

    def __init__(
        self,
        prompts: PromptBuilder,
        query_max_length: int = 64,
        passage_max_length: int = 160,
        split: bool = False,
    ) -> None:
        self.prompts, self.split = prompts, split
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length

    def windows(self, query: str, group: list[Passage]) -> list[str]:
        """`group` with every passage longer than the passage length replaced by its window `query` is about."""
        found = self.prompts.passages(group, self.passage_max_length)
        if not found.long:
            return found.texts
        pieces = defaultdict(list)
        for text, owner in zip(found.texts, found.owner, strict=True):
            pieces[owner].append(text)
        return [best_window(query, pieces[i]) for i in range(len(group))]

    def __call__(self, batch: list[tuple[str, list[Passage]]]) -> dict[str, dict[str, torch.Tensor]]:
        if self.split:
            batch = [(q, self.windows(q, group)) for q, group in batch]
        else:
            batch = [(q, [format_document(p) for p in group]) for q, group in batch]
        queries = [q for q, _ in batch]
        passages = [p for _, group in batch for p in group]  # query i's positive sits at i * group_size
        return {
            "query": self.prompts.pad(self.prompts.build(queries, "query", self.query_max_length)),
            "passage": self.prompts.pad(self.prompts.build(passages, "passage", self.passage_max_length)),
        }
