"""The LLaRA pretraining loss: EBAE + EBAR bag-of-words, plus the optional next-token LM loss.

Per task: logits at the recipe's pooled positions (8 special tokens for `reference`, the one EOS for
`paper`) through the model's own LM head, max-pooled over those positions, log-softmax, and
-mean over the target's distinct token ids of log p. Each task is averaged over the examples that
have a target (a document's last chunk has no EBAR target) and divided by 10, as the reference code
does; bow = (EBAE + EBAR) / 2, or the one task a batch has targets for; total = LM + bow.

Only the positions that need them go through the LM head (HF's `logits_to_keep` with a boolean
mask, `compat.logits_at`): the pooled ones, and the passage tokens when the LM loss is on. A packed
batch (its real tokens in one row, `PretrainCollator(pack=True)`) gives the same losses: the pooled
positions come in the same order, example by example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PretrainedConfig

from llara import compat
from llara.errors import LlaraError
from llara.training.speed import CPU_ATTENTION

BOW_SCALE = 0.1  # the reference code divides each bag-of-words loss by 10


def bow_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, k, V] at the pooled positions, targets [B, T] (-1 = padding).

    Returns the per-example loss [B] and which examples have any target [B]."""
    logp = logits.float().max(dim=1).values.log_softmax(dim=-1)
    present = targets >= 0
    picked = logp.gather(1, targets.clamp(min=0)) * present
    count = present.sum(1)
    return -picked.sum(1) / count.clamp(min=1), count > 0


def joint_mask_for(model: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """The collator's boolean joint mask (True: may attend) as the model's attention reads it: SDPA and
    llara's CPU attention take it as it is; transformers' eager attention adds its mask to the scores,
    so it gets 0 / the lowest float. Flash-attention kernels take no 4D mask at all."""
    while not isinstance(getattr(model, "config", None), PretrainedConfig) and hasattr(model, "module"):
        model = model.module  # DDP, a DeepSpeed engine (whose `config` is its own dict)
    implementation = model.config._attn_implementation
    if mask.dtype != torch.bool or mask.dim() != 4 or implementation in ("sdpa", CPU_ATTENTION):
        return mask
    if implementation == "eager":
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
    raise LlaraError(
        f"the joint EBAE + EBAR pass needs an attention that takes a 4D mask (sdpa or eager), not {implementation!r}"
    )


def task_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One forward pass; the raw (unscaled) losses of whichever tasks the batch carries and has
    targets for: "ebae" / "ebar" if it has `<task>_special` positions and at least one example with a
    target (a batch of last chunks has no EBAR term at all), "lm" if it has LM positions."""
    tasks = [t for t in ("ebae", "ebar") if f"{t}_special" in batch]
    lm_positions = batch["lm_positions"]
    keep = lm_positions.clone()
    for t in tasks:
        keep |= batch[f"{t}_special"]
    packing = {"slots": batch["slots"]} if "slots" in batch else {}  # read by training.speed.cpu_attention
    logits = compat.logits_at(  # flattened, row-major [n_kept, V]
        model,
        keep,
        input_ids=batch["input_ids"],
        attention_mask=joint_mask_for(model, batch["attention_mask"]),
        position_ids=batch["position_ids"],
        use_cache=False,
        **packing,
    )
    slot = (keep.flatten().cumsum(0) - 1).view_as(keep)  # row of `logits` for each kept position
    losses: dict[str, torch.Tensor] = {}
    for t in tasks:
        rows = slot[batch[f"{t}_special"]].view(len(batch[f"{t}_targets"]), -1)  # [examples, k]
        per_example, valid = bow_loss(logits[rows], batch[f"{t}_targets"])
        if valid.any():
            losses[t] = per_example[valid].mean()
    if lm_positions.any():
        labels = batch["input_ids"][:, 1:][lm_positions[:, :-1]]
        losses["lm"] = F.cross_entropy(logits[slot[lm_positions]].float(), labels)
    # A batch without any target still touches the logits, so every rank's graph is the same.
    losses["_graph"] = logits.sum() * 0.0
    return losses


def combine(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """total = LM + bow, bow = the mean of the EBAE and EBAR terms present, each scaled by 1/10.

    As in the reference: a batch where no example has a next passage trains EBAE/10 alone (not
    (EBAE + 0) / 20)."""
    bow = [losses[t] for t in ("ebae", "ebar") if t in losses]
    total = losses.get("_graph", 0.0)
    if bow:
        total = total + BOW_SCALE * sum(bow) / len(bow)
    return total + losses["lm"] if "lm" in losses else total


def parts(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The losses worth logging (not the zero graph anchor)."""
    return {k: v for k, v in losses.items() if not k.startswith("_")}


def joint_loss(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Both tasks from one pass over a PretrainCollator batch."""
    losses = task_losses(model, batch)
    return combine(losses), parts(losses)


def two_pass_loss(model: torch.nn.Module, ebae_batch: dict, ebar_batch: dict):
    """The same loss from two ordinary passes (PretrainCollator.separate): the baseline."""
    first, second = task_losses(model, ebae_batch), task_losses(model, ebar_batch)
    losses = {**first, **second, "_graph": first["_graph"] + second["_graph"]}
    return combine(losses), parts(losses)
