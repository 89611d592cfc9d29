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


def sentence_pair(
    title: str, text: str, rng: random.Random, given: set[str] | frozenset[str] = frozenset()
) -> tuple[str, str, str] | None:
    """One sentence of the text, not among `given` (normalized), against the rest (the Inverse Cloze
    Task); None if the text has fewer than 2 sentences or none new."""
    sentences = split_sentences(text)
    unused = [i for i, s in enumerate(sentences) if normalized(s) not in given] if len(sentences) >= 2 else []
    if not unused:
        return None
    i = rng.choice(unused)
    rest = " ".join(sentences[:i] + sentences[i + 1 :])  # the sentence itself leaves the positive
    return sentences[i], format_document({"title": title, "text": rest}), "sentence"


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
        return sentence_pair(title, text, rng)
    words = text.split()
    if len(words) < 3 * SPAN_WORDS[0]:
        return None
    n = rng.randint(SPAN_WORDS[0], min(SPAN_WORDS[1], len(words) // 3))
    i = rng.randrange(len(words) - n + 1)
    rest = " ".join(words[:i] + words[i + n :])
    return " ".join(words[i : i + n]), format_document({"title": title, "text": rest}), "span"


# What a document gives once its first query is made (`llara pairs --min-rows`), by the source of that
# first query: another sentence, else a span; another span. A title is one query, and a document that
# has one gives no other: on the suite, adding sentence and span queries to titled collections made
# them worse, while more sentences made untitled ones better (benchmarks/RESULTS.md).
FURTHER_SOURCES = {"sentence": ("sentence", "span"), "span": ("span",)}
SPAN_TRIES = 8  # random spans drawn before a short record is taken to have no new one left


def make_further_pair(
    doc: dict[str, str], first_source: str, given: set[str], rng: random.Random
) -> tuple[str, str, str] | None:
    """Another (query, positive, source) of a document whose first query came from `first_source` and
    whose queries so far are `given` (normalized), or None once it has no new one: a sentence not yet a
    query, else a span not yet one (FURTHER_SOURCES)."""
    for source in FURTHER_SOURCES.get(first_source, ()):
        if source == "sentence":
            title = (doc.get("title") or "").strip()
            if pair := sentence_pair(title, strip_title(title, doc.get("text") or ""), rng, given):
                return pair
            continue
        for _ in range(SPAN_TRIES):
            pair = make_pair(doc, "span", rng)
            if pair is None:
                break
            if normalized(pair[0]) not in given:
                return pair
    return None


SKIP_REASON = {
    "title": "no title",
    "sentence": "fewer than 2 sentences",
    "span": f"fewer than {3 * SPAN_WORDS[0]} words",
    "auto": f"no title, one sentence, fewer than {3 * SPAN_WORDS[0]} words",
}
