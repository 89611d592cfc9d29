"""What makes a LoRA training step cheap on a CPU, with the same math.

- `lean_lora`: PEFT trains the recipe's special-token rows by copying the whole embedding matrix
  each forward (and the tied LM head's), then back-propagating a dense gradient of the full
  vocabulary into it to keep 16 rows. Here the frozen matrix is read as it is (the LM head's cast to
  bf16 once) and only the special rows carry a gradient. Each LoRA update is added inside one
  matmul (addmm) instead of a matmul, a scaling and an addition over the layer's output. Same
  parameters, state dict, checkpoints and merge; the values and gradients of PEFT's forward.
- `bf16_frozen_base`: under bf16 autocast the frozen projection weights are held in bf16 once,
  instead of autocast casting each of them on every pass, and the normed input of the projections
  is cast once instead of once per projection and adapter: the same forward values. The residual
  stream, the norms, the embedding matrix and LM head and the trainable weights (LoRA, special-token
  rows) stay fp32, and `restore_fp32_base` puts the exact fp32 weights back before LoRA is merged
  into them for the final model.
- `cheap_dropout`: LoRA's dropout masks on a CPU drawn 16 bits an element from a fast generator
  seeded by torch's (SFC64), instead of `torch.bernoulli`, which draws them on one core and took
  ~30% of a fine-tuning step: the same rate (to 1/65536), the same seeding, resuming and GradCache
  replay (the seed comes from torch's generator), a different stream of masks.
- `use_cpu_attention`: attention as transformers' eager path computes it (matmul, softmax, matmul;
  scores and softmax in fp32), which on a CPU at training lengths runs forward + backward 2-3x
  faster than SDPA's flash kernel; it reads the joint pass's boolean 4D mask as SDPA does ("may
  attend"), and packed pretraining rows (`slots`).
"""

from __future__ import annotations

import logging
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llara import compat

log = logging.getLogger(__name__)

DOWNCAST = "_llara_bf16_base"  # attribute of a model whose frozen decoder weights prepare_model cast


# ---------------------------------------------------------------------------------- special tokens
def _rows_only_forward(self, x: torch.Tensor, active_adapters, *args, **kwargs) -> torch.Tensor:
    """TrainableTokensLayer.forward_adapters without the full-matrix copy and gradient."""
    base = self.base_layer
    plain = (
        not self.disable_adapters
        and not self.merged
        and len(active_adapters) == 1
        and not args
        and not kwargs
        and (
            (type(base) is nn.Embedding and base.max_norm is None and not base.sparse)
            or (type(base) is nn.Linear and base.bias is None)
        )
    )
    plain = plain and not _partitioned(base.weight)
    if not plain:  # anything unusual: PEFT's own forward
        return _PARENT[type(self)].forward_adapters(self, x, active_adapters, *args, **kwargs)
    name = active_adapters[0]
    delta = self.trainable_tokens_delta[name]
    index = self.__dict__.setdefault("_llara_index", {})
    if (name, x.device) not in index:
        ids = torch.tensor(self.token_indices[name], dtype=torch.long, device=x.device)
        rows = base.num_embeddings if type(base) is nn.Embedding else base.out_features
        slot = torch.full((rows,), -1, dtype=torch.long, device=x.device)
        slot[ids] = torch.arange(len(ids), device=x.device)
        index[(name, x.device)] = (ids, slot)
    ids, slot = index[(name, x.device)]
    if type(base) is nn.Embedding:
        out = base(x)  # the frozen matrix: no gradient, no copy
        where = slot[x]
        hit = where >= 0  # written even when empty, so the rows are in every step's graph (DDP)
        rows = delta[where[hit]].to(out.dtype)
        if out.requires_grad:  # a leaf: gradient checkpointing's `enable_input_require_grads` hook
            return out.index_put((hit,), rows)
        out[hit] = rows
        return out
    # A tied LM head: base logits from the frozen matrix, the special columns from the trained rows.
    out = F.linear(x, _autocast_copy(self, base.weight, x.device.type))
    out[..., ids] = F.linear(x, delta.to(x.dtype)).to(out.dtype)
    return out


def _partitioned(weight: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 parameter: only gathered inside its own module's forward."""
    return hasattr(weight, "ds_id")


def _autocast_copy(module: nn.Module, weight: torch.Tensor, device: str) -> torch.Tensor:
    """A frozen weight in the autocast dtype, cast once and kept (autocast would cast the whole
    matrix again on every pass), or the weight itself outside autocast."""
    if not torch.is_autocast_enabled(device) or weight.requires_grad:
        return weight
    dtype = torch.get_autocast_dtype(device)
    key = (weight.data_ptr(), weight._version, dtype)
    cached = module.__dict__.get("_llara_autocast_copy")
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().to(dtype))
        module.__dict__["_llara_autocast_copy"] = cached
    return cached[1]


# --------------------------------------------------------------------------------- LoRA updates
def _fused_lora_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """lora.Linear.forward with the update added inside one matmul: base(x) + h @ (s B)^T as an
    addmm, where PEFT computes B h, scales it and adds it (two more passes over the output)."""
    names = self.active_adapters
    name = names[0] if len(names) == 1 else None
    plain = (
        name is not None
        and not self.disable_adapters
        and not self.merged
        and not args
        and not kwargs
        and name in self.lora_A
        and name not in self.lora_variant
        and self.lora_B[name].bias is None
        and not self.fan_in_fan_out
        and not _partitioned(self.lora_B[name].weight)
    )
    if not plain:
        return _PARENT[type(self)].forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    h = lora_a(self.lora_dropout[name](self._cast_input_dtype(x, lora_a.weight.dtype)))
    if result.dtype != h.dtype and not torch.is_autocast_enabled(x.device.type):  # mixed, no autocast
        return (result + F.linear(h, lora_b.weight) * self.scaling[name]).to(result.dtype)
    update = (lora_b.weight * self.scaling[name]).t()  # [r, out]: scaling the small matrix, not the output
    out = torch.addmm(result.flatten(0, -2), h.flatten(0, -2), update)
    return out.view(result.shape).to(result.dtype)


def lean_lora(model: nn.Module) -> int:
    """Swap PEFT's special-token layers (embedding and tied LM head) for the rows-only forward and
    its LoRA linear layers for the fused update; returns how many layers were swapped."""
    swapped = 0
    for module in model.modules():
        cls = type(module)
        if getattr(cls, "_llara_lean", False):
            continue
        if compat.is_trainable_tokens_layer(module):
            kind, method, function = "trainable_tokens", "forward_adapters", _rows_only_forward
        elif compat.is_lora_linear(module):
            kind, method, function = "lora_linear", "forward", _fused_lora_forward
        else:
            continue
        missing = compat.missing_peft_internals(module, kind)
        if missing or (kind == "lora_linear" and not isinstance(module.base_layer, nn.Linear)):
            if missing and not _WARNED.get(kind):  # fail closed: PEFT's own forward, said once
                _WARNED[kind] = True
                log.warning("this PEFT has no %s on %s: PEFT's own forward is used", ", ".join(missing), cls.__name__)
            continue
        module.__class__ = _lean_class(cls, method, function)
        swapped += 1
    return swapped


_WARNED: dict[str, bool] = {}


_PARENT: dict[type, type] = {}


def _lean_class(cls: type, method: str, function) -> type:
    for sub, parent in _PARENT.items():
        if parent is cls:
            return sub
    sub = type(cls.__name__, (cls,), {method: function, "_llara_lean": True})
    _PARENT[sub] = cls
    return sub


# -------------------------------------------------------------------------------------- dropout
class CheapDropout(nn.Dropout):
    """nn.Dropout whose training mask on a CPU costs a quarter of torch.bernoulli's.

    Each element keeps with probability 1 - round(p * 2^16) / 2^16, read from 16 random bits of
    numpy's SFC64 generator, seeded by one draw from torch's generator: `torch.manual_seed`, the
    Trainer's checkpointed RNG state and GradCache's replay govern it as they govern nn.Dropout.
    The kept elements are scaled by 1 / (1 - p) as nn.Dropout scales them; backward keeps a bool mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.inplace or x.device.type != "cpu":
            return super().forward(x)
        if self.p == 1:
            return x * 0.0
        seed = int(torch.randint(0, 2**62, ()))
        n = x.numel()
        bits = np.random.SFC64(seed).random_raw(-(-n // 4)).view(np.int16)[:n]
        keep = torch.from_numpy(bits).view(x.shape) >= keep_threshold(self.p)
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), 0.0)


def keep_threshold(p: float) -> int:
    """The int16 value at and above which an element is kept: P(keep) = 1 - round(p * 2^16) / 2^16."""
    return -(2**15) + round(p * 2**16)


def cheap_dropout(model: nn.Module) -> int:
    """Swap the dropout of every LoRA layer for `CheapDropout`; returns how many were swapped."""
    swapped = 0
    for module in model.modules():
        if compat.is_lora_layer(module):
            for dropout in module.lora_dropout.values():
                if type(dropout) is nn.Dropout:
                    dropout.__class__ = CheapDropout
                    swapped += 1
    return swapped


# ------------------------------------------------------------------------------------ bf16 base
def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer's block list: the ModuleList holding the most parameters."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError("no decoder layers (ModuleList) found")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


NORMED_INPUTS = ("input_layernorm", "post_attention_layernorm")  # LLaMA family: norms that feed projections only


def bf16_frozen_base(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Hold the frozen projection weights of the decoder layers in `dtype`, and cast the output of
    the norms that feed the projections once; returns the number of weights cast.

    Under autocast the forward computes the same values as before, which cast the weight and the
    normed input at every projection and adapter. The residual stream, the norms and everything
    trainable stay fp32. Undone for the merge by `restore_fp32_base`."""
    layers = decoder_layers(model)
    names = []
    for name, module in layers.named_modules():
        if isinstance(module, nn.Linear) and not module.weight.requires_grad and module.weight.dtype == torch.float32:
            module.weight.data = module.weight.data.to(dtype)
            names.append(f"{name}.weight")
    if not names:
        return 0
    # LoRA layers cast a bf16 input to the fp32 adapter weights' dtype, and autocast casts it back:
    # the same values, two copies per adapter per pass. Autocast alone handles the mixed dtypes.
    for module in layers.modules():
        if compat.is_lora_layer(module):
            module.cast_input_dtype_enabled = False
    hooks = []
    for layer in layers:  # only where the norms' outputs go nowhere but into projections
        norms = sorted(n for n, m in layer.named_children() if "norm" in n.lower())
        if norms == sorted(NORMED_INPUTS):
            hooks += [getattr(layer, n).register_forward_hook(_cast_output(dtype)) for n in norms]
    setattr(model, DOWNCAST, (names, hooks))
    return len(names)


def _cast_output(dtype: torch.dtype):
    return lambda module, args, out: out.to(dtype) if torch.is_autocast_enabled(out.device.type) else out


def restore_fp32_base(model: nn.Module, source: str, trust_remote_code: bool = False) -> bool:
    """Put the exact fp32 weights of `source` back where `bf16_frozen_base` cast them (the final
    model merges LoRA into them, as it would have without the cast). False if nothing was cast."""
    if not hasattr(model, DOWNCAST):
        return False
    names, hooks = getattr(model, DOWNCAST)
    from llara.modeling.loading import load_model

    fresh, _ = load_model(source, trust_remote_code=trust_remote_code)
    originals = dict(decoder_layers(fresh).named_parameters())
    layers = decoder_layers(model)
    params = dict(layers.named_parameters())
    for name in names:
        original = originals[name.replace(".base_layer.", ".")]
        if original.shape != params[name].shape:
            raise ValueError(f"{source}: {name} has shape {tuple(original.shape)}, trained {tuple(params[name].shape)}")
        params[name].data = original.data.to(params[name].device)
    for module in layers.modules():
        if compat.is_lora_layer(module):
            module.cast_input_dtype_enabled = True
    for hook in hooks:
        hook.remove()
    delattr(model, DOWNCAST)
    return True


# ------------------------------------------------------------------------------------- attention
CPU_ATTENTION = "llara_cpu"


def cpu_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, slots=None, **kwargs):
    """Attention as transformers' eager path computes it (matmul, softmax, matmul), with the scores
    and softmax in fp32, reading a boolean mask as "may attend" (the joint pass's 4D mask) and a
    float mask as additive (the padding masks).

    With grouped-query attention the query heads that share a key/value head are stacked along the
    sequence ([B, kv, groups * L, D]) instead of copying the keys and values once per group.
    `slots` [B, L] (a packed joint batch, `PretrainCollator(pack=True)`): the inputs are one row of
    real tokens; each padded place of the mask's [B, L] layout takes the packed token `slots` names,
    attention runs padded, and the real tokens' outputs go back into the packed row."""
    if slots is not None:
        rows, width = slots.shape
        places = slots.flatten()
        real = (places >= 0).nonzero().squeeze(1)  # the padded place of each packed token, in order
        where = places.clamp(min=0)  # a padded place reads packed token 0: masked out, output dropped

        def padded(t: torch.Tensor) -> torch.Tensor:  # [1, h, N, D] -> [B, h, L, D]
            return t[0].index_select(1, where).unflatten(1, (rows, width)).transpose(0, 1)

        out, _ = cpu_attention(module, padded(query), padded(key), padded(value), attention_mask, scaling, dropout)
        return out.flatten(0, 1).index_select(0, real).unsqueeze(0), None
    batch, heads, length, dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    if attention_mask is not None and attention_mask.shape[1] != 1:  # a per-head mask: K/V copied per head
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        kv_heads, groups = heads, 1
    causal = length > 1 and getattr(module, "is_causal", True)
    bias = _attention_bias(attention_mask, causal, batch, kv_heads, groups, length, kv_length, query.device)
    query = query.reshape(batch * kv_heads, groups * length, dim)
    key = key.reshape(batch * kv_heads, kv_length, dim)
    # Scores in fp32, as SDPA's kernel keeps them (bf16 scores would round logits of ~10 by ~0.05);
    # scaling and mask in the same kernel (a masked score gets the lowest float added: exp gives 0).
    with torch.autocast(query.device.type, enabled=False):
        query, key = query.float(), key.float().transpose(1, 2)
        if bias is None:
            scores = torch.bmm(query, key) * scaling
        else:
            scores = torch.baddbmm(bias, query, key, alpha=scaling)
    probs = F.softmax(scores, dim=-1).to(value.dtype)  # the probabilities meet the values in their dtype
    probs = F.dropout(probs, p=dropout, training=module.training)
    out = torch.bmm(probs, value.reshape(batch * kv_heads, kv_length, dim)).view(batch, heads, length, dim)
    return out.transpose(1, 2).contiguous(), None


_BIAS: dict[str, tuple] = {}  # the last pass's additive mask, shared by all its layers


def _attention_bias(mask, causal, batch, kv_heads, groups, length, kv_length, device) -> torch.Tensor | None:
    """The mask as an fp32 bias [batch * kv_heads, groups * length, kv_length] (0: may attend; the
    lowest float: may not), made once per pass: every layer gets the same mask object."""
    key = (batch, kv_heads, groups, length, kv_length, causal, device)
    cached = _BIAS.get("last")
    if cached is not None and cached[0] == key and cached[1]() is mask:
        return cached[2]
    if mask is None and not causal:
        return None
    if mask is None:
        bias = torch.ones(length, kv_length, dtype=torch.bool, device=device).tril(kv_length - length)[None, None]
    else:
        bias = mask[:, :, :, :kv_length]
    if bias.dtype == torch.bool:
        bias = torch.zeros(bias.shape, device=device).masked_fill_(~bias, torch.finfo(torch.float32).min)
    bias = bias.float()
    if bias.shape[1] == 1:  # one mask for all heads: repeated for each query head of a key/value group
        bias = bias.unsqueeze(2).expand(batch, kv_heads, groups, length, kv_length)
    else:
        bias = bias.expand(batch, kv_heads, length, kv_length)
    bias = bias.reshape(batch * kv_heads, groups * length, kv_length)
    _BIAS["last"] = (key, (lambda: None) if mask is None else weakref.ref(mask), bias)
    return bias


# The families whose attention `cpu_attention` is proven to compute (tests/test_families.py): no
# soft-capped scores (Gemma-2), masks and scaling passed as transformers passes them to SDPA.
CPU_ATTENTION_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3_text")


def cpu_attention_fits(config) -> bool:
    """`cpu_attention` computes this model's attention: a tested family, no attention soft-capping."""
    return config.model_type in CPU_ATTENTION_FAMILIES and getattr(config, "attn_logit_softcapping", None) is None


def use_cpu_attention(model: nn.Module) -> str:
    """Switch a transformers model to `cpu_attention`; returns the implementation it had (give it back
    with `model.set_attn_implementation(previous)` before saving)."""
    previous = model.config._attn_implementation
    compat.register_attention(CPU_ATTENTION, cpu_attention)
    model.set_attn_implementation(CPU_ATTENTION)
    return previous
