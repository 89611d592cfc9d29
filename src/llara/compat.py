"""Every call llara makes into a dependency's private or version-sensitive API, in one place.

The floors in pyproject.toml are the versions CI tests (constraints/floors.txt pins them; `.ci/run`
runs the suite on them whenever the newest releases differ). When a newer or older release moves one
of these internals, the failure names the package and the version found, instead of a deep traceback.
Warnings that dependencies raise about each other (not about our calls) are silenced here, each one
named, so a normal run prints none.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from typing import Any

from llara.errors import LlaraError


@cache
def _ranges() -> dict[str, tuple[str | None, str | None]]:
    """{distribution: (minimum, exclusive maximum)} of llara's own requirements (pyproject.toml, one
    home), in either order pip writes them (`a>=1,<2` or `a<2,>=1`)."""
    try:
        requirements = metadata.requires("llara") or []
    except metadata.PackageNotFoundError:  # run from a source tree without `pip install`: nothing to check
        return {}
    out = {}
    for req in requirements:
        name = re.match(r"^([A-Za-z0-9_.\-]+)", req)
        if not name or "extra ==" in req:
            continue
        low = re.search(r">=\s*([0-9][^,;\s]*)", req)
        high = re.search(r"(?<![<>=!])<\s*([0-9][^,;\s]*)", req)
        out[name.group(1).lower()] = (low.group(1) if low else None, high.group(1) if high else None)
    return out


def floors() -> dict[str, str]:
    """{distribution: minimum version} of llara's own requirements."""
    return {k: low for k, (low, _) in _ranges().items() if low}


def caps() -> dict[str, str]:
    """{distribution: the first version not tested} of llara's own requirements."""
    return {k: high for k, (_, high) in _ranges().items() if high}


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def require(package: str) -> str:
    """The installed version of `package`; LlaraError if it is older than llara's floor."""
    try:
        found = metadata.version(package)
    except metadata.PackageNotFoundError:
        raise LlaraError(f"{package} is not installed: pip install '{package}>={floors().get(package, '0')}'") from None
    floor = floors().get(package.lower())
    if floor and _version_tuple(found) < _version_tuple(floor):
        raise LlaraError(f"llara needs {package} >= {floor}, found {found}: pip install -U '{package}>={floor}'")
    return found


def untested_training_versions() -> str | None:
    """Why training.speed's fast paths are not proven here (a PEFT or transformers release outside the
    range the tests ran on, e.g. installed with --no-deps), or None."""
    for package in ("peft", "transformers"):
        found, low, high = metadata.version(package), floors().get(package), caps().get(package)
        version = _version_tuple(found)
        if (low and version < _version_tuple(low)) or (high and version >= _version_tuple(high)):
            return f"{package} {found} is outside the tested range {low or ''}..{high or ''}"
    return None


def check_training_stack() -> None:
    """Training relies on Trainer/PEFT internals (below): refuse versions older than the tested ones."""
    for package in ("torch", "transformers", "peft", "accelerate"):
        require(package)


def _internal(owner: Any, name: str, package: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        raise LlaraError(
            f"{package} {metadata.version(package)} has no {type(owner).__name__}.{name}, which llara uses; "
            f"install the tested version: pip install '{package}=={floors().get(package, '')}'"
        ) from None


@contextmanager
def quiet(*messages: str):
    """Silence the named warnings (regex on the message) for the block."""
    with warnings.catch_warnings():
        for message in messages:
            warnings.filterwarnings("ignore", message=message)
        yield


# ------------------------------------------------------------------------------------------ torch
def cpu_runs_bf16() -> bool:
    """AVX512-BF16 / AMX: oneDNN runs bf16 natively; elsewhere it is emulated and slow."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@cache
def cpu_ranks_restore_checkpoints() -> None:
    """transformers before 5.20 resumes a multi-process run with `torch.load(map_location=args.device)`,
    which for CPU ranks is "cpu:0", a location torch has no deserializer for. Register one (after
    torch's own, a public torch API) that reads "cpu:N" as the CPU. Once per process."""
    import torch.serialization

    def cpu_n(storage: Any, location: str) -> Any:
        return storage.cpu() if location.startswith("cpu:") else None

    torch.serialization.register_package(99, lambda storage: None, cpu_n)


# ----------------------------------------------------------------------------------- transformers
def known_model_types() -> Any:
    """The model types transformers has built in (config.json "model_type")."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return CONFIG_MAPPING


def save_checkpoint(trainer: Any, model: Any, trial: Any) -> None:
    """Trainer._save_checkpoint (private). PEFT warns that it saves the resized embedding layer: that
    is what llara wants (the special tokens' rows), so the warning is not shown."""
    from transformers import Trainer

    with quiet(r"Setting `save_embedding_layers` to `True`"):
        _internal(Trainer, "_save_checkpoint", "transformers")(trainer, model, trial)


def prepare_inputs(trainer: Any, inputs: dict) -> dict:
    return _internal(trainer, "_prepare_inputs", "transformers")(inputs)


def accumulation_steps(trainer: Any) -> int:
    """Micro-batches in the current optimizer step (the Trainer's last step of an epoch may have fewer)."""
    return getattr(trainer, "current_gradient_accumulation_steps", trainer.args.gradient_accumulation_steps)


def loss_context(trainer: Any) -> Any:
    return _internal(trainer, "compute_loss_context_manager", "transformers")()


def optimizer_cls_and_kwargs(args: Any, model: Any) -> tuple[type, dict]:
    from transformers import Trainer

    return _internal(Trainer, "get_optimizer_cls_and_kwargs", "transformers")(args, model)


@cache
def _takes_boolean_logits_to_keep() -> bool:
    """transformers >= 5.21 slices the hidden states by a boolean [B, L] `logits_to_keep`
    (modeling_utils.slice_logits_to_keep); older releases take only an int or 1D positions."""
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


def logits_at(model: Any, keep: Any, **inputs: Any) -> Any:
    """`model(**inputs).logits` at the True places of the boolean [B, L] `keep`, flattened row-major
    to [n_kept, V]; only those rows go through the LM head. transformers >= 5.21 does it itself (a
    boolean `logits_to_keep`); on older releases a forward pre-hook on the output embeddings picks
    the rows out of the [B, L, H] hidden states it is given."""
    if _takes_boolean_logits_to_keep():
        return model(**inputs, logits_to_keep=keep).logits
    inner = model
    while not hasattr(inner, "get_output_embeddings") and hasattr(inner, "module"):
        inner = inner.module  # DDP
    handle = inner.get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0][keep], *args[1:]))
    try:
        return model(**inputs).logits
    finally:
        handle.remove()


def register_attention(name: str, function: Any) -> None:
    """A custom attention function for `model.set_attn_implementation(name)`, with the additive
    masks transformers builds for its eager path (a 4D mask a caller passes goes through as is)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, eager_mask)


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation (gradient) checkpointing: `activation_checkpointing_enable` where
    transformers has it (it deprecates the old name), `gradient_checkpointing_enable` before."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# -------------------------------------------------------------------------------------------- peft
def get_peft_model(model: Any, config: Any) -> Any:
    """peft.get_peft_model; PEFT reads transformers' deprecated `is_gradient_checkpointing`."""
    from peft import get_peft_model as _get

    with quiet(r"`is_gradient_checkpointing` is deprecated"):
        return _get(model, config)


def is_trainable_tokens_layer(module: Any) -> bool:
    """PEFT's layer for trainable embedding rows (`trainable_token_indices`), and its tied LM head."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    return isinstance(module, TrainableTokensLayer)


def is_lora_layer(module: Any) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def is_lora_linear(module: Any) -> bool:
    """PEFT's LoRA layer around an nn.Linear (its `forward`, `lora_A`/`lora_B`/`scaling` dicts,
    `lora_variant`, `fan_in_fan_out` and `_cast_input_dtype` are what `training.speed` relies on)."""
    from peft.tuners.lora import Linear

    return isinstance(module, Linear)


# The PEFT internals training.speed reads, per layer kind, as in the PEFT releases of pyproject.toml's
# range (the tests run at both ends). A layer missing any of them is left to PEFT's own forward.
PEFT_INTERNALS = {
    "trainable_tokens": (
        "base_layer", "disable_adapters", "merged", "trainable_tokens_delta", "token_indices", "forward_adapters",
    ),
    "lora_linear": (
        "base_layer", "active_adapters", "disable_adapters", "merged", "lora_A", "lora_B", "lora_dropout",
        "lora_variant", "scaling", "fan_in_fan_out", "_cast_input_dtype", "cast_input_dtype_enabled",
    ),
}  # fmt: skip


def missing_peft_internals(module: Any, kind: str) -> list[str]:
    """Which of PEFT_INTERNALS[kind] this layer lacks (an untested PEFT release moved them)."""
    return [name for name in PEFT_INTERNALS[kind] if not hasattr(module, name)]


def merge_and_unload(model: Any) -> Any:
    with quiet(r"`is_gradient_checkpointing` is deprecated"):
        return model.merge_and_unload()


@contextmanager
def zero3_init_disabled():
    """Load a model on one rank after a DeepSpeed ZeRO-3 run: transformers would otherwise build it
    under `deepspeed.zero.Init` (partitioned across ranks, a collective call the other ranks never
    join). Reads and restores transformers.integrations.deepspeed's module-level config reference."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = _internal(hf_deepspeed, "_hf_deepspeed_config_weak_ref", "transformers")
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


# ------------------------------------------------------------------------------------- deepspeed
class _DropMessages:
    """A logging filter that drops the records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str) -> None:
        self.prefixes = prefixes

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_dependency_logs() -> None:
    """Lines dependencies print on every normal run, filtered (everything else they say stays):
    DeepSpeed, once installed, is imported by transformers and accelerate on every model load, and on
    a machine without a GPU warns each time that it uses the CPU; bm25s logs each index build at DEBUG
    on a logger it sets to DEBUG itself. Both reset their loggers' levels when imported, hence filters."""
    import logging

    logging.getLogger("DeepSpeed").addFilter(_DropMessages("Setting accelerator to CPU"))
    logging.getLogger("bm25s").addFilter(_DropMessages("Building index from", "The query is empty"))


def resize_embeddings(model, size: int) -> None:
    """HF's `resize_token_embeddings` with its mean resizing (new rows drawn around the old rows' mean),
    without the line it logs about it: llara says itself that the added tokens are untrained."""
    import logging

    logger = logging.getLogger("transformers.modeling_utils")
    quiet = _DropMessages("The new embeddings will be initialized")
    logger.addFilter(quiet)
    try:
        model.resize_token_embeddings(size, pad_to_multiple_of=None)
    finally:
        logger.removeFilter(quiet)
