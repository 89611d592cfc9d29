"""Weak pairs: a query made from a document and, as its positive, the rest of that document.

What `llara pairs` trains on and what `llara.calibration` measures a model on, made one way: the
document's title (title -> text), else one of its sentences (-> the rest of its text, the Inverse
Cloze Task), else a span of a few words (-> the rest, for records of one sentence).
"""

from __future__ import annotations

import random
import re

from llara.data.beir import format_document

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
SENTENCE_LOWER = re.compile(r"(?<=[.!?])\s+")  # a text in lower case only (MEDLINE): any full stop ends one


def normalized(text: str) -> str:
    return re.sub(r"\W+", " ", text).strip().lower()


def strip_title(title: str, text: str) -> str:
    """The text without a leading copy of its title (else the task is string matching)."""
    t, words = normalized(title), text.split()
    if not t:
        return text.strip()
    for n in range(1, len(words) + 1):
        head = normalized(" ".join(words[:n]))
        if head == t:
            return " ".join(words[n:]).lstrip(" .:-\u2013\u2014").strip()
        if not t.startswith(head):
            break
    return text.strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of 4 words or more. A capital after the full stop marks a boundary (so "e.g. the" is
    not one), except in a text with no capital at all, where every full stop does."""
    pattern = SENTENCE_LOWER if text == text.lower() else SENTENCE
    return [s.strip() for s in pattern.split(text) if len(s.split()) >= 4]


PAIR_SOURCES = ("title", "sentence", "span")  # what `--query auto` tries for each document, in order
SPAN_WORDS = (4, 16)  # a span query's length in words; its document needs 3x the shortest


def make_pair(doc: dict[str, str], query_mode: str, rng: random.Random) -> tuple[str, str, str] | None:
    """(query, positive, source) of one document, or None if it cannot give one. Sources: `title`
    (title -> text), `sentence` (one sentence -> the rest of its text, the Inverse Cloze Task), `span`
    (a few consecutive words -> the rest of the text, for records of one sentence); `auto` takes the
    first of them the document can give."""
    if query_mode == "auto":
        for source in PAIR_SOURCES:
            pair = make_pair(doc, source, rng)
            if pair is not None:
                return pair
        return None
    title = (doc.get("title") or "").strip()
    text = strip_title(title, doc.get("text") or "")
    if query_mode == "title":
        return (title, text, "title") if title and text else None
    if query_mode == "sentence":
        sentences = split_sentences(text)
        if len(sentences) < 2:
            return None
        i = rng.randrange(len(sentences))
        rest = " ".join(sentences[:i] + sentences[i + 1 :])  # the sentence itself leaves the positive
        return sentences[i], format_document({"title": title, "text": rest}), "sentence"
    words = text.split()
    if len(words) < 3 * SPAN_WORDS[0]:
        return None
    n = rng.randint(SPAN_WORDS[0], min(SPAN_WORDS[1], len(words) // 3))
    i = rng.randrange(len(words) - n + 1)
    rest = " ".join(words[:i] + words[i + n :])
    return " ".join(words[i : i + n]), format_document({"title": title, "text": rest}), "span"


SKIP_REASON = {
    "title": "no title",
    "sentence": "fewer than 2 sentences",
    "span": f"fewer than {3 * SPAN_WORDS[0]} words",
    "auto": f"no title, one sentence, fewer than {3 * SPAN_WORDS[0]} words",
}
