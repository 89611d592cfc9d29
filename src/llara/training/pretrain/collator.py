"""Batches for the joint EBAE + EBAR pass (and, for tests and the benchmark, for two separate passes).

Joint row, left-padded:   [pad ...][prefix][text][EBAE suffix][EBAR suffix]
- attention: causal, padding masked, and the EBAR suffix cannot see the EBAE suffix;
- position ids: count real tokens, and the EBAR suffix restarts at the EBAE suffix's first position,
  so each suffix sits "right after" the text exactly as in its own separate sequence.
The mask is boolean [B, 1, L, L] (True = may attend): transformers passes a 4D mask straight to
SDPA, which reads a bool mask as "attend here". Padding rows attend to themselves so no row is empty
(an all-False row would give NaN).

Packed (`pack=True`, for `training.speed.cpu_attention`): the same batch without its padding. The
real tokens of all rows sit in one row [1, N] (ids, position ids, pooled and LM positions, in row
order), so the projections and MLPs never compute a padded token; the mask stays the padded [B, 1,
L, L] one, and `slots` [B, L] tells the attention which packed token fills each padded place (-1: a
padding place). Same math, token by token.
"""

from __future__ import annotations

import torch

from llara.modeling.prompts import PromptBuilder


class PretrainCollator:
    """Turns {"text_ids", "own_ids", "next_ids"} examples into one joint batch."""

    def __init__(
        self, prompts: PromptBuilder, exclude_ids: list[int] | set[int], lm_loss: bool = True, pack: bool = False
    ) -> None:
        if prompts.pieces["passage"][0] != prompts.pieces["query"][0]:
            raise ValueError(f"recipe {prompts.recipe.name}: the joint pass needs one shared prefix")
        self.prompts, self.lm_loss, self.pack = prompts, lm_loss, pack
        self.exclude = set(exclude_ids)
        self.prefix = prompts.pieces["passage"][0]
        self.ebae_suffix, self.ebar_suffix = prompts.pieces["passage"][1], prompts.pieces["query"][1]
        self.k = prompts.recipe.pool_tokens

    def prompt_length(self) -> int:
        """Tokens the joint row's prompt takes (prefix and both suffixes): a chunk's text gets the rest
        of --chunk-tokens, so a joint row is never longer (the reference's cutoff_len)."""
        return len(self.prefix) + len(self.ebae_suffix) + len(self.ebar_suffix)

    def targets(self, rows: list[list[int] | None]) -> torch.Tensor:
        """Unique target ids per example, special ids excluded, padded with -1: [B, T]."""
        bags = [sorted(set(r) - self.exclude) if r else [] for r in rows]
        out = torch.full((len(bags), max(1, max(len(b) for b in bags))), -1, dtype=torch.long)
        for i, bag in enumerate(bags):
            out[i, : len(bag)] = torch.tensor(bag, dtype=torch.long)
        return out

    def lm_positions(self, features: list[dict], real: torch.Tensor, end: int) -> torch.Tensor:
        """Where the LM loss reads logits: position p predicts token p+1 for each text token p+1 whose
        predecessor is a real token (the prefix's last token predicts the first text token)."""
        text = torch.zeros_like(real)
        for i, f in enumerate(features):
            text[i, end - len(f["text_ids"]) : end] = True
        lm = torch.zeros_like(real)
        if self.lm_loss:
            lm[:, :-1] = text[:, 1:] & real[:, :-1]
        return lm

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        s1, s2 = len(self.ebae_suffix), len(self.ebar_suffix)
        seqs = [self.prefix + f["text_ids"] + self.ebae_suffix + self.ebar_suffix for f in features]
        n, width = len(seqs), max(len(s) for s in seqs)
        input_ids = torch.full((n, width), self.prompts.pad_id, dtype=torch.long)
        real = torch.zeros((n, width), dtype=torch.bool)
        for i, seq in enumerate(seqs):
            input_ids[i, width - len(seq) :] = torch.tensor(seq)
            real[i, width - len(seq) :] = True
        position_ids = (real.long().cumsum(-1) - 1).clamp(min=0)
        ebar = torch.arange(width - s2, width)
        position_ids[:, ebar] = position_ids[:, width - s2 - s1 : width - s2 - s1 + 1] + torch.arange(s2)

        mask = torch.ones((width, width), dtype=torch.bool).tril()
        mask[width - s2 :, width - s2 - s1 : width - s2] = False  # EBAR suffix must not see the EBAE suffix
        mask = mask.unsqueeze(0) & real[:, None, :]
        mask = mask | torch.eye(width, dtype=torch.bool).unsqueeze(0)  # padding rows: themselves only
        # The pooled positions: last k of each suffix (same columns in every row thanks to left padding).
        ebae_special = torch.zeros((n, width), dtype=torch.bool)
        ebae_special[:, width - s2 - self.k : width - s2] = True
        ebar_special = torch.zeros((n, width), dtype=torch.bool)
        ebar_special[:, width - self.k :] = True
        batch = {
            "input_ids": input_ids,
            "attention_mask": mask.unsqueeze(1),
            "position_ids": position_ids,
            "real": real,
            "lm_positions": self.lm_positions(features, real, end=width - s1 - s2),
            "ebae_special": ebae_special,
            "ebar_special": ebar_special,
            "ebae_targets": self.targets([f["own_ids"] for f in features]),
            "ebar_targets": self.targets([f["next_ids"] for f in features]),
        }
        return packed(batch) if self.pack else batch

    def separate(self, features: list[dict]) -> tuple[dict, dict]:
        """The same examples as two ordinary left-padded batches (EBAE and EBAR), for the
        equivalence test and the benchmark baseline."""
        out = []
        for side, suffix, targets in (("ebae", self.ebae_suffix, "own_ids"), ("ebar", self.ebar_suffix, "next_ids")):
            batch = self.prompts.pad([self.prefix + f["text_ids"] + suffix for f in features], multiple_of=1)
            real = batch.pop("attention_mask").bool()
            width = real.shape[1]
            special = torch.zeros_like(real)
            special[:, width - self.k :] = True
            lm = self.lm_positions(features, real, end=width - len(suffix))
            if side == "ebar":  # the LM loss is read once, from the EBAE pass
                lm[:] = False
            out.append(
                {
                    **batch,
                    "attention_mask": real.long(),
                    "real": real,
                    "lm_positions": lm,
                    f"{side}_special": special,
                    f"{side}_targets": self.targets([f[targets] for f in features]),
                }
            )
        return out[0], out[1]


PER_TOKEN = ("input_ids", "position_ids", "real", "lm_positions", "ebae_special", "ebar_special")


def packed(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A joint batch without its padding: per-token fields [1, N] over the real tokens in row order,
    the padded mask as it was, and `slots` [B, L]: the packed index of each padded place (-1: padding)."""
    real = batch["real"].flatten()
    where = real.nonzero().squeeze(1)
    slots = torch.full((real.numel(),), -1, dtype=torch.long)
    slots[where] = torch.arange(where.numel())
    out = dict(batch)
    for key in PER_TOKEN:
        out[key] = batch[key].flatten()[where].unsqueeze(0)
    out["slots"] = slots.view_as(batch["real"])
    return out
