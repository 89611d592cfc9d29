"""Encoding throughput: llara vs a plain transformers loop vs sentence-transformers, same model and pooling.

All three embed the same CISI documents with smollm2 and the `mean` recipe's input
(``passage: {text}</s>``, at most 256 tokens, mean pooling over real tokens):

- plain: AutoModel in fp32, corpus order, batch 32, right padding (what most users write first);
- sentence-transformers: SentenceTransformer(models.Transformer + models.Pooling("mean")).encode();
- llara: LlaraEncoder.encode_corpus (length-sorted batches, inference_mode, bf16 autocast where the
  CPU runs it natively, padding to a multiple of 8), at a few batch sizes.

Agreement is the mean cosine of each embedding to llara's own fp32 embedding of the same document.

    python benchmarks/bench_encode.py --docs 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from llara.data.beir import format_document
from llara.inference.encoder import LlaraEncoder
from llara.modeling.loading import resolve_model

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"


def timed(fn, n: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, n / (time.perf_counter() - t0)


def plain_loop(folder: Path, texts: list[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tok(
                texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out).numpy()


def sentence_transformers(folder: Path, texts: list[str], max_length: int, batch_size: int = 32) -> np.ndarray:
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(str(folder), max_seq_length=max_length)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_embedding_dimension(), "mean")], device="cpu")
    return st.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=300, help="the first N CISI documents")
    parser.add_argument("--batch-sizes", default="8,16,32", help="llara batch sizes to try")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    docs = [json.loads(line) for line in CISI.open()][: args.docs]
    n = len(docs)
    folder = resolve_model("smollm2")
    fast = LlaraEncoder.from_pretrained(folder, recipe="mean", passage_max_length=args.max_length)
    exact = LlaraEncoder.from_pretrained(folder, recipe="mean", passage_max_length=args.max_length, precision="fp32")
    # the same input string the llara prompt builds: "passage: " + text + eos
    texts = [f"passage: {format_document(d)}{fast.tokenizer.eos_token}" for d in docs]
    print(
        f"{n} CISI docs, smollm2, mean pooling, max {args.max_length} tokens, torch threads {torch.get_num_threads()}"
    )
    print(f"llara autocast: {fast.amp_dtype}")
    fast.encode_corpus(docs[:8])  # warm-up (oneDNN kernels)

    ref, ref_rate = timed(lambda: exact.encode_corpus(docs, batch_size=32, show_progress_bar=False), n)
    rows = {"llara fp32 (sorted, batch 32)": (ref_rate, 1.0)}
    plain, plain_rate = timed(lambda: plain_loop(folder, texts, args.max_length), n)
    rows["plain transformers loop (fp32, corpus order, batch 32)"] = (plain_rate, float((plain * ref).sum(1).mean()))
    st, st_rate = timed(lambda: sentence_transformers(folder, texts, args.max_length), n)
    rows["sentence-transformers encode (fp32, batch 32)"] = (st_rate, float((st * ref).sum(1).mean()))
    best = ("", 0.0)
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        emb, rate = timed(lambda bs=bs: fast.encode_corpus(docs, batch_size=bs, show_progress_bar=False), n)
        name = f"llara (sorted, {fast.amp_dtype}, batch {bs})"
        rows[name] = (rate, float((emb * ref).sum(1).mean()))
        best = max(best, (name, rate), key=lambda x: x[1])

    print("\n| method | docs/s | mean cosine to llara fp32 |\n|---|---:|---:|")
    for name, (rate, cos) in rows.items():
        print(f"| {name} | {rate:.2f} | {cos:.5f} |")
    name, rate = best
    print(f"\nbest llara: {name}")
    print(f"speed-up vs plain loop: {rate / plain_rate:.2f}x (target >= 2.5x)")
    print(f"speed-up vs sentence-transformers: {rate / st_rate:.2f}x (target >= 1.5x)")
    print(f"mean cosine to fp32: {rows[name][1]:.5f} (target >= 0.999)")


if __name__ == "__main__":
    main()
