"""Exported sentence-transformers model vs llara itself, and the self-reconstruction rate of models.

1. Parity and overhead: the same arXiv abstracts encoded by LlaraEncoder (the baseline) and by
   SentenceTransformer(exported folder); prints the max abs difference and the time ratio.
2. Self-reconstruction@k (`llara explain`): the mean share of a passage's own tokens among the
   top-k tokens its embedding decodes to, for each --models entry, as a ratio to the first.

    python benchmarks/bench_export_explain.py --docs 64 --models smollm2 runs/adapted
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llara.data.arxiv import write_arxiv_beir
from llara.data.beir import load_beir
from llara.inference.encoder import LlaraEncoder
from llara.inference.explain import explain_many
from llara.integrations.export import export_encoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["smollm2"])
    ap.add_argument("--top-k", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        data = load_beir(write_arxiv_beir(Path(tmp) / "arxiv"))
        texts = [d["text"] for d in list(data.corpus.values())[: args.docs]]

        from sentence_transformers import SentenceTransformer

        enc = LlaraEncoder.from_pretrained(args.models[0], precision="fp32", device="cpu")
        st = SentenceTransformer(
            str(export_encoder(enc, Path(tmp) / "st", "sentence-transformers")), trust_remote_code=True, device="cpu"
        )
        enc.encode(texts[:4]), st.encode_document(texts[:4])  # warm-up
        # Alternate the two, best of 3 each: the CPU is shared, single timings are noisy.
        llara_s, st_s = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            a = enc.encode_corpus(texts, batch_size=16)
            t1 = time.perf_counter()
            b = st.encode_document(texts, batch_size=16)
            llara_s.append(t1 - t0)
            st_s.append(time.perf_counter() - t1)
        print(f"{args.docs} arXiv abstracts, {args.models[0]}, fp32, batch 16, best of 3")
        print(f"  llara encode {min(llara_s):.1f}s, sentence-transformers {min(st_s):.1f}s: "
              f"ratio {min(st_s) / min(llara_s):.2f}")  # fmt: skip
        print(f"  max abs diff {np.abs(a - b).max():.2e}")

        base = None
        for model in args.models:
            e = LlaraEncoder.from_pretrained(model, precision="fp32", device="cpu")
            rates = []
            for i in range(0, len(texts), 16):
                rates += [x.reconstruction for x in explain_many(e, texts[i : i + 16], top_k=args.top_k)]
            rate = float(np.mean(rates))
            base = base or rate
            print(f"  self-reconstruction@{args.top_k} {model}: {rate:.3f} (x{rate / base:.2f} vs {args.models[0]})")


if __name__ == "__main__":
    main()
