import pytest
import torch

from llara.errors import LlaraError
from llara.modeling.loading import load_model, resolve_model


def test_folder_without_config_or_safetensors_is_refused(tmp_path):
    with pytest.raises(LlaraError, match="no config.json"):
        resolve_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(LlaraError, match="no .safetensors"):
        load_model(tmp_path)


def test_unknown_name_is_refused():
    with pytest.raises(LlaraError, match="not a built-in name"):
        resolve_model("no-such-model")


def test_smollm2_gguf_converts_once_to_a_safetensors_folder(smollm2_dir):
    assert smollm2_dir.is_dir() and any(smollm2_dir.glob("*.safetensors"))
    assert not list(smollm2_dir.parent.glob(".*"))  # no temporary folder left behind
    mtime = smollm2_dir.stat().st_mtime_ns
    assert resolve_model("smollm2") == smollm2_dir and smollm2_dir.stat().st_mtime_ns == mtime
    model, tok = load_model("smollm2")
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    assert getattr(model.config, "quantization_config", None) is None
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, -1]
    assert tok.decode(logits.argmax()).strip() == "Paris"  # the real weights, not random ones
