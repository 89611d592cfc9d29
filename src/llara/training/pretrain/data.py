"""Pretraining rows from plain text: chunks of a document, each with its own and the next chunk's tokens.

Accepted corpora (one file):
- `.txt`: documents separated by blank lines;
- JSONL of {"text"} or {"title", "text"} rows (a BEIR corpus.jsonl is one of these);
- JSONL in the reference code's format {"input", "output_summarize", "output_predict"}.

A row with neither title nor text (legal in BEIR) has nothing to learn from: it is left out and
counted in one warning.

A document is split on sentence boundaries into consecutive chunks of at most `text_budget` tokens
(the chunk length minus the joint prompt: prefix and both suffixes). Chunk i is trained with EBAE
on itself and EBAR on chunk i+1; a document's last chunk has no EBAR target. A document of several
sentences that fits one chunk can be cut in two at the sentence boundary nearest its middle (`halve`,
--halve-short), so that EBAR, which trains the query side, learns on short documents too. Everything
streams; a seeded shuffle buffer mixes chunks deterministically, so a resumed run sees the same order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import IterableDataset
from transformers import PreTrainedTokenizerBase

from llara.data.beir import EMPTY_DOC_LEFT_OUT
from llara.data.io import bad_rows, get_str, iter_jsonl, iter_lines, iter_records, require_file
from llara.errors import LlaraError
from llara.modeling.prompts import read_case
from llara.training.pretrain.stopwords import remove_stop_words

REFERENCE_FIELDS = ("input", "output_summarize", "output_predict")
SENTENCE_END = re.compile(r"(?<=[.!?])(?=\s)")  # split after . ! ? and keep the space with the next sentence


@dataclass(frozen=True)
class Document:
    line: int
    text: str
    # Reference-format rows bring their own targets instead of being chunked.
    summarize: str | None = None
    predict: str | None = None


def corpus_format(path: Path) -> str:
    """'txt', 'reference' or 'text', from the suffix and the first row."""
    if path.suffix.lower() == ".txt":
        return "txt"
    for _, row in iter_jsonl(path):
        return "reference" if "input" in row else "text"
    raise LlaraError("empty corpus: no documents", path)


def iter_documents(path: str | Path) -> Iterator[Document]:
    """Stream the documents of a corpus file, validating each one (errors name file and line)."""
    path = require_file(Path(path), "corpus")
    fmt = corpus_format(path)
    count = 0
    if fmt == "txt":
        lines: list[str] = []
        start = 0
        for number, line in iter_lines(path):
            if line.strip():
                start = start or number
                lines.append(line.strip())
            elif lines:
                yield Document(start, " ".join(lines))
                count, lines, start = count + 1, [], 0
        if lines:
            yield Document(start, " ".join(lines))
            count += 1
    else:
        # a bad row stops the run, or is counted and left out (--skip-bad-rows)
        for doc in iter_records(path, lambda row, p, n: _parse_row(row, fmt, p, n)):
            if doc is not None:
                yield doc
                count += 1
    if count == 0:
        raise LlaraError("empty corpus: no documents", path)


def _parse_row(row: dict, fmt: str, path: Path, number: int) -> Document | None:
    """The row's document, or None for an empty one (left out and counted)."""
    if fmt == "reference":
        for name in REFERENCE_FIELDS:
            if name not in row:
                raise LlaraError(
                    "missing (reference-format rows need input, output_summarize, output_predict)", path, number, name
                )
        text = get_str(row, "input", path, number)
        summarize = get_str(row, "output_summarize", path, number)
        predict = get_str(row, "output_predict", path, number, allow_empty=True)  # "" = no next passage
        return Document(number, text.strip(), summarize.strip(), predict.strip())
    if "text" not in row:
        raise LlaraError("missing (rows need a text field)", path, number, "text")
    title = get_str(row, "title", path, number, required=False)
    text = get_str(row, "text", path, number, allow_empty=True)
    full = f"{title.strip()} {text.strip()}".strip()
    if not full:
        bad_rows().note(EMPTY_DOC_LEFT_OUT, path, number)
        return None
    return Document(number, full)


def count_documents(path: str | Path) -> int:
    """One validating pass over the corpus (no tokenising): run it before anything is written."""
    return survey_documents(path, "as-given")[0]


def survey_documents(path: str | Path, text_case: str) -> tuple[int, int]:
    """`count_documents`' pass, also counting the documents read in lower case (in capitals only): for the plan."""
    documents = folded = 0
    for doc in iter_documents(path):
        documents += 1
        folded += read_case(doc.text, text_case) != doc.text
    return documents, folded


def split_sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text) if s.strip()]


def chunk_ids(sentence_ids: list[list[int]], budget: int) -> list[list[int]]:
    """Pack whole sentences into chunks of at most `budget` tokens; a longer sentence is cut."""
    chunks: list[list[int]] = []
    current: list[int] = []
    for ids in sentence_ids:
        if current and len(current) + len(ids) > budget:
            chunks.append(current)
            current = []
        while len(ids) > budget:  # one sentence longer than a chunk
            if current:
                chunks.append(current)
                current = []
            chunks.append(ids[:budget])
            ids = ids[budget:]
        current = current + ids
    if current:
        chunks.append(current)
    return chunks


def halve(sentence_ids: list[list[int]]) -> list[list[int]]:
    """A document of whole sentences as two chunks, cut at the sentence boundary nearest its middle (in tokens)."""
    total = sum(len(ids) for ids in sentence_ids)
    seen, cut, best = 0, 1, total
    for k, ids in enumerate(sentence_ids[:-1], start=1):
        seen += len(ids)
        if abs(total - 2 * seen) < best:
            cut, best = k, abs(total - 2 * seen)
    return [sum(sentence_ids[:cut], []), sum(sentence_ids[cut:], [])]


class PretrainDataset(IterableDataset):
    """Endless stream of {"text_ids", "own_ids", "next_ids"} examples (next_ids is None for a last chunk).

    `own_ids` / `next_ids` are the bag-of-words targets of EBAE / EBAR. Reference-format rows bring
    their target texts, which are tokenised as the reference does (with the tokenizer's special
    tokens, cut at `target_length`; the special ids are dropped later). `remove_stop_words` applies the
    reference's --remove_stop_words to every target text. `text_case` reads a document in capitals
    only in lower case as the encoder will (llara.modeling.prompts.read_case); the default is the reference's
    reading, and the trainer passes the model's.

    Epoch e shuffles with seed + e through a buffer of `shuffle_buffer` chunks, so the order is a
    pure function of (corpus, tokenizer, seed): a resumed Trainer replays it exactly.
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        text_budget: int,
        seed: int = 42,
        shuffle_buffer: int = 2048,
        epochs: int | None = None,
        target_length: int | None = None,
        remove_stop_words: bool = False,
        text_case: str = "as-given",
        halve_short: bool = False,
    ) -> None:
        if text_budget < 1:
            raise LlaraError(f"chunk length leaves no room for text ({text_budget} tokens)")
        self.path, self.tokenizer, self.budget = Path(path), tokenizer, text_budget
        self.seed, self.shuffle_buffer, self.epochs = seed, shuffle_buffer, epochs
        self.target_length = target_length or text_budget
        self.remove_stop_words = remove_stop_words
        self.text_case = text_case
        self.halve_short = halve_short

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def _target(self, text: str) -> list[int]:
        text = read_case(text, self.text_case)
        if self.remove_stop_words:
            text = remove_stop_words(text)
        return self.tokenizer(text, truncation=True, max_length=self.target_length)["input_ids"]

    def _chunk_target(self, ids: list[int] | None) -> list[int] | None:
        if ids is None or not self.remove_stop_words:
            return ids
        return self._target(self.tokenizer.decode(ids))

    def chunks(self) -> Iterator[dict]:
        """Examples of one pass over the corpus, in file order."""
        for doc in iter_documents(self.path):
            text = read_case(doc.text, self.text_case)  # a document in capitals only: whole, not per sentence
            if doc.summarize is not None:  # reference format: targets given
                yield {
                    "text_ids": self._ids([text])[0][: self.budget],
                    "own_ids": self._target(doc.summarize),
                    "next_ids": self._target(doc.predict) if doc.predict else None,
                }
                continue
            sentences = self._ids(split_sentences(text))
            pieces = chunk_ids(sentences, self.budget)
            if self.halve_short and len(pieces) == 1 and len(sentences) > 1:
                pieces = halve(sentences)  # so that EBAR has a next passage to predict on short documents too
            for i, ids in enumerate(pieces):
                nxt = pieces[i + 1] if i + 1 < len(pieces) else None
                yield {"text_ids": ids, "own_ids": self._chunk_target(ids), "next_ids": self._chunk_target(nxt)}

    def shuffled(self, epoch: int) -> Iterator[dict]:
        rng = random.Random(self.seed + epoch)
        buffer: list[dict] = []
        for example in self.chunks():
            if len(buffer) < self.shuffle_buffer:
                buffer.append(example)
                continue
            i = rng.randrange(len(buffer))
            yield buffer[i]
            buffer[i] = example
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[dict]:
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            yield from self.shuffled(epoch)
            epoch += 1
