"""The embedding forward, written once: every path that turns a prompt batch into embeddings
(LlaraEncoder, contrastive fine-tuning, the sentence-transformers module, explain) calls these.

A batch comes from `PromptBuilder.pad`: left-padded, position ids counting real tokens only. The
embedding is the recipe's pooling of the last layer's states; with left padding the pooled special
tokens sit at the end of every row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from llara.modeling.recipes import Recipe


def last_hidden_state(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last-layer states [B, L, H] of a padded prompt batch.

    A plain Hugging Face causal LM runs its transformer body only (no vocabulary logits). Anything
    wrapping one (DDP, PEFT) runs its own forward, so DDP's gradient hooks and LoRA adapters take
    part; `logits_to_keep=1` then keeps the LM head to a single position."""
    if isinstance(model, PreTrainedModel):
        body = getattr(model, model.base_model_prefix, model)
        return body(**inputs).last_hidden_state
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """The recipe's embedding from last-layer states of a left-padded batch [B, L, H] -> [B, H]."""
    if recipe.pooling == "last":
        return hidden[:, -recipe.pool_tokens :, :].mean(dim=1)
    if recipe.pooling == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    raise ValueError(f"unknown pooling {recipe.pooling}")


def embed(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], recipe: Recipe, normalize: bool = True
) -> torch.Tensor:
    """float32 embeddings [B, H] of a padded prompt batch, L2-normalised unless `normalize=False`."""
    pooled = pool(last_hidden_state(model, inputs).float(), inputs["attention_mask"], recipe)
    return F.normalize(pooled, dim=-1) if normalize else pooled
