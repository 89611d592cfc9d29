"""Every supported model family through the whole pipeline, on tiny random configs built in code:
pretrain -> finetune -> encode -> export -> sentence-transformers load, with embeddings equal to a
plain transformers forward of the same prompt, and training losses and gradients equal with llara's
fast paths on and off. A family transformers does not know is refused in one line."""

from pathlib import Path

import numpy as np
import pytest
import torch

from llara.inference.encoder import LlaraEncoder
from llara.integrations.export import export_encoder
from llara.testing import FAMILIES, make_tiny_model
from llara.training.finetune.options import FinetuneOptions
from llara.training.finetune.trainer import finetune
from llara.training.pretrain.options import PretrainOptions
from llara.training.pretrain.trainer import run_pretrain
from tests.conftest import run_cli
from tests.test_train_speed import SLOW_PATH, assert_same, build, step

TEXTS = ["dense passage retrieval with a language model", "the library index of a document", "what is a query?"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_dir(request, tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp(f"tiny-{request.param}"), arch=request.param)


def plain_forward(folder: Path, ids: list[int]) -> np.ndarray:
    """The reference embedding of one prompt: transformers' own class and attention, no padding, no
    batching: the mean of the last layer's states at the 8 pooled tokens, L2-normalised."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    pooled = hidden[-8:].mean(0)
    return (pooled / pooled.norm()).numpy()


def test_fast_paths_keep_losses_and_gradients(family_dir, tmp_path):
    """The fast exact paths (lean LoRA, CPU attention, packed rows where the family has them) against
    PEFT's and transformers' own, fp32, one joint pretraining pass plus an embedding pass."""
    fast = step(*build(family_dir, tmp_path, bf16_base=False))
    slow = step(*build(family_dir, tmp_path, **SLOW_PATH))
    assert_same(slow, fast, tol=5e-5)


def test_pipeline_pretrain_finetune_encode_export(family_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("\n\n".join(TEXTS) + "\n\n") * 4)
    opts = PretrainOptions(output=tmp_path / "pt", max_steps=2, train_batch_size=2, precision="fp32")
    adapted = run_pretrain(str(family_dir), corpus, opts)
    rows = tmp_path / "train.jsonl"
    rows.write_text(
        "".join(f'{{"query": "{t[:12]}", "pos": ["{t}"], "neg": ["{TEXTS[i - 1]}"]}}\n' for i, t in enumerate(TEXTS))
    )
    ft = FinetuneOptions(output=tmp_path / "ft", max_steps=2, train_batch_size=2, group_size=2, precision="fp32")
    finetune(str(adapted), rows, ft)
    encoder = LlaraEncoder.from_pretrained(tmp_path / "ft", precision="fp32")
    passages, queries = encoder.encode(TEXTS, side="passage"), encoder.encode(TEXTS, side="query")
    for i, text in enumerate(TEXTS):
        for side, got in (("passage", passages), ("query", queries)):
            ids = encoder.prompts.build([text], side, 64)[0]
            assert np.abs(plain_forward(tmp_path / "ft", ids) - got[i]).max() < 1e-4, (side, i)
    out = export_encoder(encoder, tmp_path / "st", "sentence-transformers")
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    assert np.abs(st.encode_document(TEXTS) - passages).max() < 1e-5
    assert np.abs(st.encode_query(TEXTS) - queries).max() < 1e-5


@pytest.mark.parametrize("model_type", ["t5", "no-such-family"])
def test_unknown_family_is_refused_in_one_line(tiny_model_dir, tmp_path, model_type):
    import json
    import shutil

    folder = tmp_path / "odd"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    (tmp_path / "c.jsonl").write_text('{"_id": "1", "text": "a"}\n')
    res = run_cli("encode", "--model", folder, "--corpus", tmp_path / "c.jsonl", "--output", tmp_path / "e")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "model_type" in res.stderr and "Gemma-2" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_chunks_longer_than_a_sliding_window_are_refused(tmp_path):
    """The joint pass's 4D mask reaches the attention whole: a window (Mistral-7B-v0.1, Gemma) would be
    silently ignored, so a longer row is refused before training."""
    from llara.testing import FAMILY_EXTRAS

    assert FAMILY_EXTRAS["gemma3"]["sliding_window"] == 512
    folder = make_tiny_model(tmp_path / "gemma3", arch="gemma3")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(TEXTS) + "\n")
    res = run_cli("pretrain", "--model", folder, "--corpus", corpus, "--output", tmp_path / "pt", "--max-steps", "1",
                  "--chunk-tokens", "600")  # fmt: skip
    assert res.returncode == 2 and "attention window (512 tokens)" in res.stderr and "Traceback" not in res.stderr


def test_lora_targets_follow_fused_projections(tmp_path):
    """Phi-3 fuses q/k/v and gate/up: the default targets adapt those, where PEFT alone would have
    adapted o and down only, silently; a name no layer has is an error."""
    from llara.errors import LlaraError
    from llara.modeling.loading import load_model
    from llara.training.common import lora_target_modules
    from llara.training.options import LORA_SHORT

    phi3, _ = load_model(make_tiny_model(tmp_path / "phi3", arch="phi3"))
    assert lora_target_modules(list(LORA_SHORT), phi3) == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    llama, _ = load_model(make_tiny_model(tmp_path / "llama", arch="llama"))
    assert lora_target_modules(list(LORA_SHORT), llama) == [f"{t}_proj" for t in LORA_SHORT]
    with pytest.raises(LlaraError, match="no linear layer 'w_in'"):
        lora_target_modules(["q", "w_in"], llama)
