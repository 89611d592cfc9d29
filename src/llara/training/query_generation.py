"""Synthetic queries (doc2query, as in InPars and Promptagator, zero-shot): an instruct LLM writes a search
query for each document.

`llara pairs --query-source generated` trains on them: the query the model writes for a document, the
whole document its positive. The built-in SmolLM2-135M-Instruct writes them unless `--generator` names
another chat model. Greedy decoding, so one corpus always gives the same queries.
"""

from __future__ import annotations

import re

import torch
from tqdm.auto import tqdm

from llara.data.weak_pairs import normalized
from llara.errors import LlaraError
from llara.modeling.config import DEFAULT_TEXT_CASE
from llara.modeling.loading import device_of_rank, load_model
from llara.modeling.precision import autocast_dtype
from llara.modeling.prompts import read_case
from llara.settings import DEFAULT_MODEL

PROMPT = (
    "Write a short search query, a few words, that someone would type to find the following text. "
    "Reply with the query only.\n\nText: {text}"
)
ANSWER_START = "Search query:"  # the reply is begun for the model, so it writes the query, not a preamble
MAX_TEXT_TOKENS = 192  # the document's head: enough for its topic, and prompts stay short to prefill
MAX_QUERY_TOKENS = 20
COPY_SHARE = 0.8
MIN_QUERY_WORDS = 2  # shorter (or empty) is no query: the document falls back to another source
LABEL = re.compile(r"^\s*(?:\*\*)?(?:(?:the\s+)?search\s+)?query(?:\s+is)?\s*[:\-]\s*(?:\*\*)?\s*", re.IGNORECASE)


def clean_query(generated: str) -> str:
    """The query in a model's reply: its first non-empty line that is not a lead-in ("The search query
    is:"), without a "Query:" label or quotes; "" when that leaves fewer than MIN_QUERY_WORDS words."""
    lines = [LABEL.sub("", s).strip().strip("\"'`*").strip() for s in generated.splitlines()]
    line = next((s for s in lines if s and not s.endswith(":")), "")
    return line if len(line.split()) >= MIN_QUERY_WORDS else ""


def copied(query: str, document: str) -> bool:
    """The query is the document's own words: empty, or at least COPY_SHARE of its words one run of the
    document's (a weak model's usual reply, which teaches string matching rather than retrieval)."""
    q, d = normalized(query).split(), normalized(document).split()
    if not q:
        return True
    longest, run = 0, [0] * (len(d) + 1)  # the longest common run of words, row by row
    for word in q:
        run = [0] + [run[j] + 1 if word == d[j] else 0 for j in range(len(d))]
        longest = max(longest, *run)
    return longest >= COPY_SHARE * len(q)


@torch.inference_mode()
def generate_queries(
    texts: list[str],
    model: str = DEFAULT_MODEL,
    batch_size: int = 16,
    precision: str = "auto",
    trust_remote_code: bool = False,
) -> list[str]:
    """One query per text ("" where the model gave none), in order; batches of similar length, a
    progress bar."""
    device = torch.device(device_of_rank())
    dtype = autocast_dtype(precision, device) or torch.float32
    lm, tokenizer = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    if not tokenizer.chat_template:
        raise LlaraError(f"--generator {model}: its tokenizer has no chat template (an instruct model writes queries)")
    lm.to(device)
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [read_case(t, DEFAULT_TEXT_CASE) for t in texts]  # a text in capitals only, as llara reads it
    heads = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=MAX_TEXT_TOKENS)["input_ids"]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPT.format(text=tokenizer.decode(ids, skip_special_tokens=True))}],
            tokenize=False,
            add_generation_prompt=True,
        )
        + ANSWER_START
        for ids in heads
    ]
    order = sorted(range(len(prompts)), key=lambda i: -len(heads[i]))  # little padding per batch
    queries = [""] * len(texts)
    for start in tqdm(range(0, len(order), batch_size), desc="generating queries", unit="batch"):
        rows = order[start : start + batch_size]
        batch = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        out = lm.generate(
            **batch.to(device),
            max_new_tokens=MAX_QUERY_TOKENS,
            do_sample=False,  # (no_repeat_ngram_size would stop loops but cost 7x the generation time)
            pad_token_id=tokenizer.pad_token_id,
        )
        replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, reply in zip(rows, replies, strict=True):
            queries[i] = clean_query(reply)
    return queries
