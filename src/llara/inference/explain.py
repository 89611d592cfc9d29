"""Read an embedding back through the model's own LM head: which vocabulary tokens does it "say"?

EBAE/EBAR train the embedding positions so that softmax(W h) puts its mass on the tokens of the text
itself (passage side) or of the next passage (query side). Decoding the same distribution after
training shows what a retriever has learned, and why a query and a document match.

How the distribution is read, per recipe:
- reference: logits of the 8 special positions, max-pooled over the positions, then softmax
  (exactly the bag-of-words objective of the released code);
- paper / repllama: the single last position (``</s>``), softmax;
- mean: the mean-pooled embedding through the LM head (no objective reads it; shown for comparison).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from llara.modeling.embedder import last_hidden_state, pool
from llara.modeling.recipes import SIDES


@dataclass
class TokenScore:
    token: str  # the token decoded on its own, e.g. " retrieval"
    id: int
    prob: float
    in_text: bool  # the token id occurs in the text's own tokenisation (an EBAE target)


@dataclass
class Explanation:
    text: str
    side: str  # "passage" (EBAE prompt) or "query" (EBAR prompt)
    recipe: str
    tokens: list[TokenScore]  # top-k, most probable first
    text_token_count: int  # distinct non-special token ids of the text (the EBAE target set)
    reconstruction: float  # |top-k ∩ text ids| / min(k, text_token_count): 1.0 = the top-k is all own tokens
    top_k_mass: float  # total probability of the top-k tokens
    embedding: list[float] = field(repr=False, default_factory=list)  # L2-normalised, as encode() gives

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("embedding")
        return d


@dataclass
class Comparison:
    query: Explanation
    document: Explanation
    shared: list[TokenScore]  # tokens in both top-k lists (query-side scores), by product of probabilities
    cosine: float  # the retrieval score: inner product of the normalised embeddings

    def to_dict(self) -> dict:
        return {
            "query": self.query.to_dict(),
            "document": self.document.to_dict(),
            "shared": [asdict(t) for t in self.shared],
            "cosine": self.cosine,
        }


def _excluded_ids(encoder) -> list[int]:
    """Special tokens are never targets of the objective (and would crowd the list): hide them."""
    tok = encoder.tokenizer
    ids = set(tok.all_special_ids)
    vocab = tok.get_vocab()
    ids.update(vocab[t] for t in encoder.recipe.special_tokens if t in vocab)
    return sorted(ids)


@torch.inference_mode()
def vocabulary_distributions(encoder, texts: list[str], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities [n, vocab], normalised embeddings [n, dim]) of texts under the encoder's recipe."""
    if side not in SIDES:
        from llara.errors import LlaraError

        raise LlaraError(f"unknown side {side!r}; use 'passage' or 'query'")
    recipe = encoder.recipe
    sequences = encoder.prompts.build(texts, side, encoder.max_length[side])
    inputs = {k: v.to(encoder.device) for k, v in encoder.prompts.pad(sequences).items()}
    amp = encoder.amp_dtype
    with torch.autocast(encoder.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        hidden = last_hidden_state(encoder.model, inputs)
        head = encoder.model.get_output_embeddings()
        if recipe.pooling == "last":
            # Left padding puts every text's pooled positions at the end of the row.
            logits = head(hidden[:, -recipe.pool_tokens :, :]).float().amax(dim=1)
        else:
            logits = head(pool(hidden, inputs["attention_mask"], recipe)).float()
    probs = torch.softmax(logits, dim=-1)
    vocab = len(encoder.tokenizer)
    if probs.shape[-1] > vocab:  # padded LM-head rows have no token behind them
        probs = probs[:, :vocab]
    embeddings = torch.nn.functional.normalize(pool(hidden.float(), inputs["attention_mask"], recipe), dim=-1)
    return probs.cpu(), embeddings.cpu()


def explain_many(encoder, texts: list[str], side: str = "passage", top_k: int = 20) -> list[Explanation]:
    """One Explanation per text (one forward pass per batch of texts)."""
    if top_k < 1:
        from llara.errors import LlaraError

        raise LlaraError(f"top_k must be at least 1, got {top_k}")
    probs, embeddings = vocabulary_distributions(encoder, list(texts), side)
    excluded = torch.tensor(_excluded_ids(encoder), dtype=torch.long)
    excluded = excluded[excluded < probs.shape[-1]]
    ranked = probs.clone()
    ranked[:, excluded] = -1.0
    k = min(top_k, ranked.shape[-1] - len(excluded))
    top_p, top_i = ranked.topk(k, dim=-1)
    text_ids = encoder.prompts.text_ids(list(texts))
    out = []
    for n, text in enumerate(texts):
        own = set(text_ids[n]) - set(excluded.tolist())
        tokens = [
            TokenScore(encoder.tokenizer.decode([i]), int(i), float(p), int(i) in own)
            for p, i in zip(top_p[n].tolist(), top_i[n].tolist(), strict=True)
        ]
        hits = sum(t.in_text for t in tokens)
        out.append(
            Explanation(
                text=text,
                side=side,
                recipe=encoder.recipe.name,
                tokens=tokens,
                text_token_count=len(own),
                reconstruction=hits / max(1, min(k, len(own))) if own else 0.0,
                top_k_mass=float(top_p[n].sum()),
                embedding=embeddings[n].tolist(),
            )
        )
    return out


def explain(encoder, text: str, side: str = "passage", top_k: int = 20) -> Explanation:
    """The top-k vocabulary tokens of one text's embedding, with their probabilities.

    `side`: "passage" reads the EBAE ("summarize") prompt, "query" the EBAR ("predict the next") prompt.
    """
    return explain_many(encoder, [text], side, top_k)[0]


def compare(encoder, query: str, document: str, top_k: int = 20) -> Comparison:
    """A query (EBAR prompt) and a document (EBAE prompt) side by side: their tokens, the tokens they
    share, and the cosine similarity the retriever would score them with."""
    q = explain(encoder, query, "query", top_k)
    d = explain(encoder, document, "passage", top_k)
    dp = {t.id: t.prob for t in d.tokens}
    shared = sorted((t for t in q.tokens if t.id in dp), key=lambda t: -t.prob * dp[t.id])
    cosine = float(torch.tensor(q.embedding) @ torch.tensor(d.embedding))
    return Comparison(q, d, shared, cosine)
