"""Turning texts into model inputs for a recipe (llara.modeling.recipes): ids, truncation, left padding.

A recipe wraps a text as ``prefix + text + suffix``. Passages take the EBAE side ("summarize"),
queries the EBAR side ("predict the next"). Pieces are tokenised separately and concatenated, and
only the text is truncated, so the suffix (and its pooled tokens) always survives and pretraining,
fine-tuning and encoding see exactly the same ids.

A text in capitals only (old newswire, library catalogues, teletype) is read in lower case unless the
model's llara.json says "text_case": "as-given" (`read_case`): the LLM learned its language in mixed
case, and a text in capitals costs ~1.7x the tokens. On the all-capitals TIME collection this one
change lifts the 12 + 12-minute dense model from 0.186 to 0.575 nDCG@10 (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llara.compat import resize_embeddings
from llara.data.beir import format_document
from llara.errors import LlaraError
from llara.modeling.recipes import EOS, SIDES, Recipe, load_recipe
from llara.settings import TEXT_CASES

PASSAGE_OVERLAP = 0.25  # of each passage's text shared with the next, so no sentence is only ever cut in two
FOLD_MIN_LETTERS = 20  # fewer capitals are an acronym or a code ("AIDS", "NASA"): read as written


def read_case(text: str, text_case: str = "fold-capitals") -> str:
    """`text` as the model reads it: with "fold-capitals", a text with no lower-case letter and at least
    FOLD_MIN_LETTERS capitals in lower case; every other text (and any text with "as-given") as written."""
    if text_case == "as-given" or not isinstance(text, str) or not text.isupper():
        return text
    capitals = 0
    for char in text:
        capitals += char.isupper()
        if capitals >= FOLD_MIN_LETTERS:
            return text.lower()
    return text


@dataclass(frozen=True)
class PassageCounts:
    """How documents were read: how many, how many longer than one passage, how many passages, how many
    were in capitals only and read in lower case."""

    documents: int = 0
    long: int = 0  # documents longer than one passage: split (or, truncating, cut)
    passages: int = 0
    split: bool = True  # False: every document is one passage, cut to the length
    folded: int = 0  # documents in capitals only, read in lower case (read_case)

    def __add__(self, other: PassageCounts) -> PassageCounts:
        return PassageCounts(
            self.documents + other.documents,
            self.long + other.long,
            self.passages + other.passages,
            other.split,
            self.folded + other.folded,
        )

    def summary(self, max_length: int) -> str:
        """One line for the plan, e.g. "420 of 423 documents are longer than 256 tokens: split into 3546
        passages (8.38x the texts to encode); 423 in capitals only, read in lower case"."""
        head = f"{self.long} of {self.documents} documents are longer than {max_length} tokens"
        if self.long and not self.split:
            head = f"{head}: truncated (--long-documents truncate: only their first {max_length} tokens are read)"
        elif self.long:
            cost = self.passages / max(self.documents, 1)
            head = f"{head}: split into {self.passages} passages ({cost:.2f}x the texts to encode)"
        return f"{head}; {self.folded} in capitals only, read in lower case" if self.folded else head

    def record(self) -> dict:
        """What metrics.json, manifests and index metadata say about it."""
        return {
            "long_documents": "split" if self.split else "truncate",
            "documents": self.documents,
            "documents_long": self.long,
            "documents_long_share": self.long / max(self.documents, 1),
            "passages": self.passages,
            "documents_folded": self.folded,
        }


@dataclass
class Passages:
    """Documents as the passages that are encoded: `texts[i]` comes from document `owner[i]`."""

    texts: list[str] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    documents: int = 0
    long: int = 0  # documents longer than one passage: split (or, truncating, cut)
    split: bool = True
    folded: int = 0  # documents in capitals only, read in lower case

    def counts(self) -> PassageCounts:
        return PassageCounts(self.documents, self.long, len(self.texts), self.split, self.folded)


def add_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: Recipe) -> bool:
    """Give the tokenizer the recipe's special tokens, growing the embeddings. True if anything changed."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in recipe.special_tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # New rows start at the mean of the old ones (HF's default), a sane untrained point.
        resize_embeddings(model, len(tokenizer))
        return True
    return bool(missing)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding id: the tokenizer's pad token, else unk (what the reference code sets), else EOS.
    Padded positions are masked, so the choice never changes an embedding or a loss."""
    for tid in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    raise LlaraError("the tokenizer has no pad, unk or eos token to pad with")


class PromptBuilder:
    """Turns texts into model inputs for one recipe and tokenizer (left padding). `text_case`: how a text in
    capitals only is read (`read_case`); "as-given" here, so that a bare builder reads what the reference
    code reads, while every model's encoder and trainer pass their llara.json's choice."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, recipe: Recipe | str | dict, text_case: str = "as-given"
    ) -> None:
        if text_case not in TEXT_CASES:
            raise LlaraError(f"unknown text case {text_case!r}; expected one of: {', '.join(TEXT_CASES)}")
        self.tokenizer = tokenizer
        self.text_case = text_case
        self.recipe = load_recipe(recipe)
        for tok in self.recipe.special_tokens:
            if tok not in tokenizer.get_vocab():
                raise LlaraError(f"tokenizer lacks the special token {tok}; call add_special_tokens first")
        self.pad_id = pad_token_id(tokenizer)
        self.pieces = {
            side: (self._ids(self.recipe.prefix(side), self.recipe.bos), self._ids(self.recipe.suffix(side)))
            for side in SIDES
        }
        k = self.recipe.pool_tokens
        for side in SIDES:  # the pooled tokens must be the suffix's own, never text or padding
            if self.recipe.pooling == "last" and len(self.pieces[side][1]) < k:
                raise LlaraError(
                    f"recipe {self.recipe.name!r} pools the last {k} tokens, but its {side} template has only "
                    f"{len(self.pieces[side][1])} after {{text}} with this tokenizer",
                    self.recipe.source,
                    field="pool_tokens",
                )
        # Running tallies for summaries ("truncated 12 of 1460 texts"): wrap() counts every text it cuts.
        self.wrapped = 0
        self.truncated = 0
        self.truncated_by_side = dict.fromkeys(SIDES, 0)  # e.g. documents cut, apart from queries
        self.wrapped_by_side = dict.fromkeys(SIDES, 0)

    def _ids(self, piece: str, special: bool = False) -> list[int]:
        """Ids of one prompt piece; `special` adds what the tokenizer adds around a text (BOS on LLaMA)."""
        if not piece and not special:
            return []
        piece = piece.replace(EOS, self.tokenizer.eos_token or "")
        return self.tokenizer(piece, add_special_tokens=special)["input_ids"]

    def special_ids(self, side: str) -> list[int]:
        """Ids of the tokens that carry the embedding (the last `pool_tokens` of the suffix)."""
        n = self.recipe.pool_tokens
        return self.pieces[side][1][-n:] if n else []

    def text_ids(self, texts: list[str]) -> list[list[int]]:
        texts = [read_case(text, self.text_case) for text in texts]
        try:
            return self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        except TypeError:  # the fast tokenizer's only word on a non-string or a lone surrogate
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise LlaraError(f"text {i} is a {type(text).__name__}, not a string") from None
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise LlaraError(f"text {i} is not valid Unicode (lone surrogate at character {e.start})") from None
            raise

    def wrap(self, text_ids: list[int], side: str, max_length: int) -> list[int]:
        """prefix + text (truncated to fit max_length) + suffix."""
        prefix, suffix = self.pieces[side]
        room = max_length - len(prefix) - len(suffix)
        if room < 1:
            raise LlaraError(
                f"max length {max_length} leaves no room for text: the {self.recipe.name} {side} prompt "
                f"alone takes {len(prefix) + len(suffix)} tokens"
            )
        self.wrapped += 1
        self.truncated += len(text_ids) > room
        self.wrapped_by_side[side] += 1
        self.truncated_by_side[side] += len(text_ids) > room
        return prefix + text_ids[:room] + suffix

    def passages(self, docs: Sequence[dict | str], max_length: int, split: bool = True) -> Passages:
        """The passages that stand for `docs` (BEIR dicts or strings) at `max_length` tokens with the passage
        prompt. A document that fits is one passage, its text as `format_document` gives it. A longer one is
        cut into windows of its text at token boundaries, each sharing PASSAGE_OVERLAP with the next (the last
        ends at the text's end), the title in front of each (unless it would take half the room); with
        `split=False` it stays one passage, which encoding truncates. A document in capitals only is read, and
        its passages given, in lower case (`read_case`)."""
        written = [format_document(d) for d in docs]
        whole = [read_case(text, self.text_case) for text in written]
        folded = [new != old for new, old in zip(whole, written, strict=True)]  # judged on the document whole
        prefix, suffix = self.pieces["passage"]
        room = max_length - len(prefix) - len(suffix)
        lengths = [len(ids) for ids in self.text_ids(whole)] if whole else []
        out = Passages(documents=len(whole), split=split, folded=sum(folded))
        out.long = sum(n > room for n in lengths)
        if not split or not out.long:
            out.texts, out.owner = whole, list(range(len(whole)))
            return out
        for i, (doc, text, n) in enumerate(zip(docs, whole, lengths, strict=True)):
            if n <= room:
                out.texts.append(text)
                out.owner.append(i)
                continue
            title, body = (
                ("", doc)
                if isinstance(doc, str)
                else ((doc.get("title") or "").strip(), (doc.get("text") or "").strip())
            )
            if folded[i]:  # its windows and the title in each, in lower case like the whole
                title, body = title.lower(), body.lower()
            if not body:  # a title alone longer than a passage: cut, as there is no text to split
                out.texts.append(text)
                out.owner.append(i)
                continue
            title_ids = len(self.text_ids([title + " "])[0]) if title else 0
            if title_ids > room // 2:
                title, title_ids = "", 0
            windows = self._windows(body, max(1, room - title_ids - 2))  # 2: re-tokenising a window may differ
            out.texts.extend(f"{title} {w}" if title else w for w in windows)
            out.owner.extend([i] * len(windows))
        return out

    def _windows(self, text: str, width: int) -> list[str]:
        """`text` in pieces of `width` tokens, overlapping by PASSAGE_OVERLAP, cut at token boundaries: spans of
        the text itself where the tokenizer gives character offsets (fast tokenizers), else decoded ids."""
        fast = getattr(self.tokenizer, "is_fast", False)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=fast)
        ids = enc["input_ids"]
        stride = max(1, width - int(width * PASSAGE_OVERLAP))
        starts = [0]
        while starts[-1] + width < len(ids):
            starts.append(starts[-1] + stride)
        starts[-1] = max(0, min(starts[-1], len(ids) - width))  # the last window full, ending at the text's end
        if not fast:
            return [self.tokenizer.decode(ids[s : s + width]) for s in starts]
        offsets = enc["offset_mapping"]
        return [text[offsets[s][0] : offsets[min(s + width, len(ids)) - 1][1]] for s in starts]

    def build(self, texts: list[str], side: str, max_length: int) -> list[list[int]]:
        return [self.wrap(ids, side, max_length) for ids in self.text_ids(texts)]

    def pad(self, sequences: list[list[int]], multiple_of: int = 8) -> dict[str, torch.Tensor]:
        """Left-pad into tensors. position_ids count real tokens only, so an embedding does not
        depend on how much padding its batch neighbours forced on it."""
        width = max(len(s) for s in sequences)
        if multiple_of > 1:
            width = -(-width // multiple_of) * multiple_of
        input_ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, seq in enumerate(sequences):
            if seq:
                input_ids[i, width - len(seq) :] = torch.tensor(seq)
                mask[i, width - len(seq) :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
