"""Encode a corpus to .npy chunks: streaming, resumable, and split across processes.

Layout of an embeddings folder::

    manifest-00000-of-00002.json   one per shard: model, recipe, dim, dtype, corpus, chunk list
    emb-0000000000-0000001024.npy  documents [0, 1024) of the corpus: one row per passage, float32 or float16
    emb-0000000000-0000001024.ids  each row's document id, one per line

A document longer than the passage length is split into passages (`--long-documents split`, the
default; `PromptBuilder.passages`), each a row under the document's id, so a chunk of 1024 documents
may hold more rows; searching an index of them scores a document by its best passage (MaxP).

Chunks are named by their global row range, so the shards of `--shard i/n` runs merge by sorting.
Each chunk is written to a temporary name and renamed, so a chunk that exists is complete: a
resumed run skips it and re-encodes only what is missing. Only one chunk of text and embeddings is
in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from llara.data.beir import iter_corpus
from llara.data.io import atomic_write, write_json
from llara.errors import LlaraError
from llara.inference.options import DTYPES
from llara.modeling.prompts import PassageCounts

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024
# manifest keys that every shard of one folder must share, and that a resume must match
SHARED_KEYS = (
    "model",
    "recipe",
    "passage_max_length",
    "precision",
    "dim",
    "dtype",
    "corpus_docs",
    "corpus_sha256",
    "long_documents",
)


def parse_shard(spec: str | None) -> tuple[int, int]:
    """`i/n` -> (i, n); None -> torchrun's RANK/WORLD_SIZE if set, else (0, 1)."""
    if spec is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise LlaraError(f"--shard {spec!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise LlaraError(f"--shard {spec!r}: need 0 <= i < n")
    return i, n


def shard_rows(total: int, i: int, n: int) -> tuple[int, int]:
    """The i-th of n contiguous, near-equal slices of range(total)."""
    return total * i // n, total * (i + 1) // n


def manifest_name(i: int, n: int) -> str:
    return f"manifest-{i:05d}-of-{n:05d}.json"


def chunk_stem(lo: int, hi: int) -> str:
    return f"emb-{lo:010d}-{hi:010d}"


def scan_corpus(path: str | Path) -> tuple[int, str]:
    """Validate every document (bad rows stop or are skipped by the policy); (count, sha256 of the ids).

    The hash ties a resume (and the shards of one folder) to the same corpus in the same order.
    """
    h = hashlib.sha256()
    count = 0
    for _, doc_id, _ in iter_corpus(path):
        h.update(doc_id.encode() + b"\n")
        count += 1
    if not count:
        raise LlaraError("corpus is empty", path)
    return count, h.hexdigest()


def _chunks(path: Path, lo: int, hi: int, chunk_size: int) -> Iterator[tuple[int, int, list[str], list[dict]]]:
    """(start, end, ids, docs) for consecutive chunks of corpus rows [lo, hi), streaming."""
    ids: list[str] = []
    docs: list[dict] = []
    start = lo
    for row, (_, doc_id, doc) in enumerate(iter_corpus(path)):
        if row < lo:
            continue
        if row >= hi:
            break
        ids.append(doc_id)
        docs.append(doc)
        if len(ids) == chunk_size:
            yield start, start + len(ids), ids, docs
            start, ids, docs = start + len(ids), [], []
    if ids:
        yield start, start + len(ids), ids, docs


def _chunk_rows(folder: Path, lo: int, hi: int, dim: int, dtype: str) -> int | None:
    """The rows of the chunk of documents [lo, hi) if it is complete (at least one row a document, as
    many ids as rows, the dimension and dtype of the folder), else None."""
    stem = chunk_stem(lo, hi)
    emb, ids = folder / f"{stem}.npy", folder / f"{stem}.ids"
    if not (emb.is_file() and ids.is_file()):
        return None
    try:
        arr = np.load(emb, mmap_mode="r", allow_pickle=False)
    except ValueError:
        return None
    rows = arr.shape[0]
    ok = arr.ndim == 2 and arr.shape[1] == dim and arr.dtype == np.dtype(dtype) and rows >= hi - lo
    return rows if ok and _count_lines(ids) == rows else None


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def encode_corpus_file(
    encoder,
    corpus: str | Path,
    output: str | Path,
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    dtype: str = "float32",
    batch_size: int = 32,
    max_tokens_per_batch: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    show_progress_bar: bool = True,
    long_documents: str = "split",
) -> dict:
    """Encode shard `i/n` of a corpus file (EBAE / passage prompt) into `output`, long documents split
    into passages (or truncated); returns its manifest."""
    corpus, output = Path(corpus), Path(output)
    if dtype not in DTYPES:
        raise LlaraError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if chunk_size < 1:
        raise LlaraError("chunk size must be at least 1")
    i, n = shard
    total, corpus_hash = scan_corpus(corpus)  # every check happens before anything is written
    lo, hi = shard_rows(total, i, n)
    manifest = {
        "model": encoder.fingerprint(),
        "recipe": encoder.recipe.record(),  # a built-in's name, a user recipe in full
        "query_max_length": encoder.max_length["query"],
        "passage_max_length": encoder.max_length["passage"],
        "precision": str(encoder.amp_dtype or "float32").removeprefix("torch."),
        "dim": encoder.dim,
        "dtype": dtype,
        "corpus": str(corpus),
        "corpus_docs": total,
        "corpus_sha256": corpus_hash,
        "shard": [i, n],
        "rows": [lo, hi],
        "chunk_size": chunk_size,
        "long_documents": long_documents,
        "complete": False,
        "chunks": [],
    }
    path = output / manifest_name(i, n)
    if path.exists() and not resume:
        raise LlaraError(
            f"shard {i}/{n} was already started here; pass --resume to finish it, or use a new folder", path
        )
    _check_folder(output, manifest)

    write_json(path, manifest)
    split = long_documents == "split"
    # the plan: how many documents are long, and what reading them whole costs (tokenizing only)
    plan = PassageCounts(split=split)
    for _, _, _, docs in _chunks(corpus, lo, hi, chunk_size):
        plan += encoder.passages(docs, long_documents).counts()
    log.info("%s", plan.summary(encoder.max_length["passage"]))
    done = 0
    progress = {"desc": f"encode shard {i}/{n}", "unit": "passage", "disable": not show_progress_bar}
    with tqdm(total=plan.passages, **progress) as bar:
        for start, end, ids, docs in _chunks(corpus, lo, hi, chunk_size):
            stem = chunk_stem(start, end)
            rows = resume and _chunk_rows(output, start, end, encoder.dim, dtype)
            if not rows:
                emb, found = encoder.encode_documents(
                    docs,
                    long_documents=long_documents,
                    batch_size=batch_size,
                    max_tokens_per_batch=max_tokens_per_batch,
                    show_progress_bar=False,
                )
                # ids first, embeddings last: an .npy file that exists marks its chunk as written
                with atomic_write(output / f"{stem}.ids") as f:
                    f.write("".join(ids[j] + "\n" for j in found.owner))
                with atomic_write(output / f"{stem}.npy", mode="wb") as f:
                    np.save(f, emb.astype(dtype), allow_pickle=False)
                done += len(ids)
                rows = len(found.texts)
            manifest["chunks"].append(
                {"rows": [start, end], "vectors": rows, "file": f"{stem}.npy", "ids": f"{stem}.ids"}
            )
            bar.update(rows)
    manifest.update(complete=True, encoded_now=done, documents_read=plan.record())
    write_json(path, manifest)
    return manifest


def _check_folder(output: Path, manifest: dict) -> None:
    """Refuse to mix shards of another model, recipe, dtype, corpus or shard count in one folder."""
    for other in sorted(output.glob("manifest-*.json")):
        seen = json.loads(other.read_text())
        for key in (*SHARED_KEYS, "chunk_size"):
            if seen.get(key) != manifest[key]:
                raise LlaraError(
                    f"this folder holds embeddings with {key}={seen.get(key)!r}, not {manifest[key]!r}; "
                    "use a new folder",
                    other,
                    field=key,
                )
        if seen["shard"][1] != manifest["shard"][1]:
            raise LlaraError(f"this folder is split in {seen['shard'][1]} shards, not {manifest['shard'][1]}", other)


# ------------------------------------------------------------------------------------------ reading
@dataclass
class Embeddings:
    """A finished embeddings folder: its shared metadata and its chunks, memory-mapped on demand."""

    folder: Path
    info: dict  # the SHARED_KEYS plus query_max_length
    chunks: list[tuple[int, int, Path, Path]]  # (first row, end row, .npy, .ids), in row order (a row: a passage)

    @property
    def count(self) -> int:
        """Rows (vectors): the documents, or more where long documents were split into passages."""
        return self.chunks[-1][1] if self.chunks else 0

    @property
    def documents(self) -> int:
        return self.info["corpus_docs"]

    @property
    def dim(self) -> int:
        return self.info["dim"]

    def arrays(self) -> Iterator[np.ndarray]:
        for _, _, emb, _ in self.chunks:
            yield np.load(emb, mmap_mode="r", allow_pickle=False)

    def ids(self) -> list[str]:
        out: list[str] = []
        for _, _, _, ids in self.chunks:
            out.extend(ids.read_text(encoding="utf-8").splitlines())
        return out

    def rows(self, index: np.ndarray) -> np.ndarray:
        """float32 copies of the given (sorted) global rows, e.g. a training sample."""
        parts = []
        for (start, end, _, _), arr in zip(self.chunks, self.arrays(), strict=True):
            sel = index[(index >= start) & (index < end)] - start
            if len(sel):
                parts.append(np.asarray(arr[sel], dtype=np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)


def open_embeddings(folder: str | Path) -> Embeddings:
    """Check that every shard is complete and the chunks cover the corpus exactly once."""
    folder = Path(folder)
    manifests = sorted(folder.glob("manifest-*.json"))
    if not folder.is_dir() or not manifests:
        raise LlaraError("not an embeddings folder (no manifest-*.json); run `llara encode` first", folder)
    first = json.loads(manifests[0].read_text())
    n = first["shard"][1]
    shards: dict[int, dict] = {}
    for path in manifests:
        m = json.loads(path.read_text())
        for key in SHARED_KEYS:
            if m.get(key) != first.get(key):
                raise LlaraError(f"shards disagree on {key}", path, field=key)
        if not m.get("complete"):
            i = m["shard"][0]
            raise LlaraError(f"shard {i}/{n} is unfinished; rerun `llara encode --shard {i}/{n} --resume`", path)
        shards[m["shard"][0]] = m
    missing = [i for i in range(n) if i not in shards]
    if missing or len(manifests) != n:
        raise LlaraError(f"shards {missing} of {n} are missing; run `llara encode --shard i/{n}` for each", folder)
    chunks = []
    expected = 0
    row = 0
    for i in range(n):
        for c in shards[i]["chunks"]:
            start, end = c["rows"]
            emb, ids = folder / c["file"], folder / c["ids"]
            if start != expected:
                raise LlaraError(f"chunk {c['file']} starts at document {start}, expected {expected}", folder)
            rows = _chunk_rows(folder, start, end, first["dim"], first["dtype"])
            if rows is None or rows != c.get("vectors", end - start):
                raise LlaraError(f"chunk {c['file']} is missing or does not match its manifest", folder)
            chunks.append((row, row + rows, emb, ids))
            expected, row = end, row + rows
    if expected != first["corpus_docs"]:
        raise LlaraError(f"chunks cover {expected} of {first['corpus_docs']} documents", folder)
    info = {key: first[key] for key in (*SHARED_KEYS, "query_max_length")}
    return Embeddings(folder, info, chunks)
