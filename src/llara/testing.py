"""Tiny random LLaMA-family models built in code, for tests and benchmarks (no hub, seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "the a of to and in is for on with as by retrieval dense passage query document search index model "
    "language large embedding vector library information science system user data text token next "
    "summarize predict words eight above following sentence original what how why classification"
).split()


def make_tokenizer(folder: Path, add_bos: bool = False, pad: bool = True):
    """A small byte-level BPE tokenizer trained in code (no hub), with eos/pad like a LLaMA chat model.

    `add_bos`: it puts BOS before every text it encodes with special tokens, as LLaMA-2, Mistral and
    LLaMA-3 do; `pad=False` leaves it without a pad token (LLaMA-2's own tokenizer has none).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] + ['", ": <>']
    tok.train_from_iterator(corpus, trainer)
    if add_bos:
        bos = tok.token_to_id("<|bos|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", bos)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|eos|>" if pad else None,
    )
    fast.save_pretrained(folder)
    return fast


FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")  # what tests train and encode
# Settings a family needs at this size (Gemma's head size is its own field; its soft-capping stays on).
FAMILY_EXTRAS = {
    "qwen3": {"head_dim": 16},
    # Large weights and low caps, so that soft-capping changes the attention scores and the logits.
    "gemma2": {
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "initializer_range": 0.3,
        "attn_logit_softcapping": 2.0,
        "final_logit_softcapping": 3.0,
    },
    "gemma3": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 512},
}


def family_config(arch: str):
    """The transformers config class of a model family (config.json's model_type)."""
    import transformers

    names = {
        "llama": "LlamaConfig",
        "mistral": "MistralConfig",
        "qwen2": "Qwen2Config",
        "qwen3": "Qwen3Config",
        "gemma2": "Gemma2Config",
        "gemma3": "Gemma3TextConfig",
        "phi3": "Phi3Config",
    }
    return getattr(transformers, names[arch])


def make_tiny_model(folder: Path, arch: str = "llama", seed: int = 0, tokenizer=None) -> Path:
    """A random 2-layer causal LM of the given family, saved as an HF folder with safetensors.

    The tokenizer is a small one trained in code unless one is given (e.g. smollm2's, for a model
    that reads real text like the real one, only faster).
    """
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = make_tokenizer(folder)
    else:
        tokenizer.save_pretrained(folder)
    config = family_config(arch)(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        **FAMILY_EXTRAS.get(arch, {}),
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
