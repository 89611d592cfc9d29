"""Whole-command encoding: `llara encode` as a user times it, against the plain loop and the encoder.

Three ways to embed the same first N CISI documents with smollm2 and the default (`reference`) recipe,
all on the same token sequences (llara's EBAE prompt, at most 256 tokens):

- plain: the transformers loop a user writes first: AutoModel in fp32, corpus order, batch 32,
  right padding, the recipe's pooling (the mean of the last 8 real tokens' states);
- in-process: `LlaraEncoder.encode_corpus` with the model already loaded (its defaults: length-sorted
  batches of 32, bf16 where the CPU runs it natively);
- command: `llara encode --model smollm2 --corpus C --output O` as a subprocess, timed from start to
  exit (Python start-up, imports, corpus validation, model load from llara's cache, encoding,
  writing the .npy chunks).

It prints docs/s of each, the command's speed-up over the plain loop, the command's time over the
in-process encoder's, and the in-process encoder's fraction of the matmul peak measured in the same
run (FLOPs: 2 x non-embedding parameters x real tokens; attention's few percent not counted).

    python benchmarks/bench_encode_command.py --docs 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_peak import peaks  # noqa: E402

from llara.data.beir import format_document  # noqa: E402
from llara.inference.encoder import LlaraEncoder  # noqa: E402

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi" / "corpus.jsonl"


def plain_loop(model, sequences: list[list[int]], pad_id: int, pool_tokens: int, batch: int = 32) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(sequences), batch):
            rows = sequences[i : i + batch]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad_id)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, seq in enumerate(rows):
                ids[r, : len(seq)], mask[r, : len(seq)] = torch.tensor(seq), 1
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            ends = mask.sum(1)
            pos = ends[:, None] - pool_tokens + torch.arange(pool_tokens)[None]
            pooled = hidden[torch.arange(len(rows))[:, None], pos].mean(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="the first N CISI documents")
    parser.add_argument("--skip-plain", action="store_true", help="leave out the (slow) plain loop")
    args = parser.parse_args()

    docs = [json.loads(line) for line in CISI.open()][: args.docs]
    n = len(docs)
    work = Path(tempfile.mkdtemp(prefix="bench-encode-"))
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    peak = peaks()
    print(f"{n} CISI docs, smollm2, reference recipe, torch threads {torch.get_num_threads()}")
    print(f"matmul peak measured now: bf16 {peak['bf16']:.0f} GFLOP/s, fp32 {peak['fp32']:.0f} GFLOP/s")

    # the command, first: a cold process, as a user runs it (the model is in llara's cache already)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    cmd = ["llara", "encode", "--model", "smollm2", "--corpus", str(corpus), "--output", str(work / "emb")]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    command_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(["llara", "--help"], check=True, env=env, capture_output=True)
    startup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    encoder = LlaraEncoder.from_pretrained("smollm2")
    load_s = time.perf_counter() - t0
    texts = [format_document(d) for d in docs]
    sequences = encoder.prompts.build(texts, "passage", encoder.max_length["passage"])
    tokens = sum(map(len, sequences))
    t0 = time.perf_counter()
    fast = encoder.encode_corpus(docs, show_progress_bar=False)
    inproc_s = time.perf_counter() - t0
    written = np.concatenate([np.load(p, allow_pickle=False) for p in sorted((work / "emb").glob("*.npy"))])
    agree = float((written * fast).sum(1).mean())

    body = encoder.model
    params = sum(p.numel() for name, p in body.named_parameters() if "embed_tokens" not in name)
    params -= 0 if body.config.tie_word_embeddings else body.get_output_embeddings().weight.numel()
    gflops = 2 * params * tokens / 1e9
    precision = "bf16" if encoder.amp_dtype == torch.bfloat16 else "fp32"

    print(f"\n{tokens} real tokens ({tokens / n:.0f} a document), {gflops:.0f} GFLOP of matmuls")
    print("| way | seconds | docs/s |\n|---|---:|---:|")
    print(f"| `llara encode` (whole process) | {command_s:.1f} | {n / command_s:.2f} |")
    print(f"| in-process encode_corpus ({precision}, model loaded) | {inproc_s:.1f} | {n / inproc_s:.2f} |")
    if not args.skip_plain:
        from transformers import AutoModel

        plain_model = AutoModel.from_pretrained(encoder.model.config._name_or_path, dtype=torch.float32).eval()
        plain_model.resize_token_embeddings(len(encoder.tokenizer), mean_resizing=False)
        plain_model.get_input_embeddings().weight.data.copy_(encoder.model.get_input_embeddings().weight)
        t0 = time.perf_counter()
        plain = plain_loop(plain_model, sequences, encoder.prompts.pad_id, encoder.recipe.pool_tokens)
        plain_s = time.perf_counter() - t0
        print(f"| plain loop (fp32, corpus order, batch 32) | {plain_s:.1f} | {n / plain_s:.2f} |")
        print(f"\nmean cosine, plain loop to llara: {float((plain * fast).sum(1).mean()):.5f}")
        print(f"command speed-up over the plain loop: {plain_s / command_s:.2f}x (target >= 3x)")
    print(f"mean cosine, command's embeddings to in-process: {agree:.5f}")
    print(f"command time over in-process encoding: {command_s / inproc_s:.2f}x (target <= 1.2x)")
    print(f"  of which: `llara --help` start-up {startup_s:.1f} s, model load in-process {load_s:.1f} s")
    achieved = gflops / inproc_s
    print(
        f"in-process encoder: {tokens / inproc_s:.0f} tokens/s = {achieved:.0f} GFLOP/s = "
        f"{achieved / peak[precision]:.0%} of the {precision} matmul peak"
    )


if __name__ == "__main__":
    main()
