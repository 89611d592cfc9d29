import json
import os

import numpy as np
import pytest
import torch

from llara.errors import LlaraError
from llara.inference.encoder import LlaraEncoder
from llara.integrations.export import export, export_encoder
from llara.modeling.recipes import SPECIAL_TOKENS
from tests.conftest import run_cli

QUERIES = ["what is dense retrieval", "how do libraries classify books?"]
# One passage far longer than passage_max_length: only the text may be cut, the suffix must survive.
PASSAGES = ["Dense retrieval with large language models.", "a library information system " * 60, "eight words"]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32", passage_max_length=48)


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def test_hf_export_is_a_plain_folder_that_round_trips(encoder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_encoder(encoder, tmp_path / "hf", "hf")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert json.loads((out / "llara.json").read_text())["passage_max_length"] == 48
    tok = AutoTokenizer.from_pretrained(out)
    assert all(t in tok.get_vocab() for t in SPECIAL_TOKENS) and tok.padding_side == "left"
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert hf.get_input_embeddings().num_embeddings == len(tok)
    again = LlaraEncoder.from_pretrained(out, precision="fp32")
    assert max_diff(again.encode(PASSAGES), encoder.encode(PASSAGES)) < 1e-6
    assert not list(tmp_path.glob(".hf*")), "temporary folder left behind"
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_lora_adapter_folder_is_exported_merged(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from llara.modeling.loading import load_model

    base, tok = load_model(tiny_model_dir)
    adapter = tmp_path / "adapter"
    # init_lora_weights=False: random B, so the adapter really changes the model
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(adapter)
    tok.save_pretrained(adapter)
    out = export(adapter, tmp_path / "merged", "hf")
    assert not (out / "adapter_config.json").exists()
    merged = LlaraEncoder.from_pretrained(out, precision="fp32")
    via_adapter = LlaraEncoder.from_pretrained(adapter, precision="fp32")
    plain = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")
    assert max_diff(merged.encode(PASSAGES), via_adapter.encode(PASSAGES)) < 1e-5
    assert max_diff(merged.encode(PASSAGES), plain.encode(PASSAGES)) > 1e-3


@pytest.mark.parametrize("recipe", ["reference", "paper"])
def test_sentence_transformers_export_gives_llara_embeddings(tiny_model_dir, tmp_path, recipe):
    from sentence_transformers import SentenceTransformer

    enc = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=recipe, precision="fp32", passage_max_length=48)
    out = export_encoder(enc, tmp_path / "st", "sentence-transformers")
    # sentence-transformers >= 6 requires the flag for any module class outside its own package,
    # even one from an installed package (llara.integrations.sentence_transformers); nothing is imported
    # from the folder.
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    q, p = enc.encode_queries(QUERIES), enc.encode_corpus(PASSAGES)
    assert max_diff(st.encode_query(QUERIES), q) < 1e-5
    assert max_diff(st.encode_document(PASSAGES), p) < 1e-5
    assert max_diff(st.encode(QUERIES, prompt_name="query"), q) < 1e-5
    assert max_diff(st.encode(PASSAGES), p) < 1e-5  # no prompt: passages, as in llara
    assert max_diff(st.encode(PASSAGES, batch_size=1), p) < 1e-5
    assert st.get_embedding_dimension() == enc.dim
    # the truncated passage still ends with the recipe's pooled tokens
    ids = st.preprocess([PASSAGES[1]], task="document")["input_ids"][0]
    n = enc.recipe.pool_tokens
    assert ids[-n:].tolist() == enc.prompts.special_ids("passage") and len(ids) <= 48
    with pytest.raises(ValueError, match="prompts are fixed"):
        st.encode(QUERIES, prompt="query: ")
    # a long document: the passages llara splits it into, embedded by sentence-transformers, are llara's rows
    docs = [{"title": "Libraries", "text": PASSAGES[1]}, PASSAGES[0]]
    rows, passages = enc.encode_documents(docs)
    assert passages.long == 1 and len(passages.texts) > 2
    assert max_diff(st.encode_document(passages.texts), rows) < 1e-5


def test_existing_output_is_refused_then_replaced(encoder, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LlaraError, match="not empty"):
        export_encoder(encoder, out, "hf")
    assert (out / "keep.txt").read_text() == "mine"
    export_encoder(encoder, out, "hf", overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.slow
def test_cli_export_and_bad_input(tiny_model_dir, tmp_path):
    out = tmp_path / "st"
    r = run_cli("export", "--model", tiny_model_dir, "--output", out, "--format", "sentence-transformers")
    assert r.returncode == 0, r.stderr
    assert (out / "modules.json").is_file() and json.loads((out / "llara.json").read_text())["recipe"] == "reference"
    bad = run_cli("export", "--model", tmp_path / "missing", "--output", tmp_path / "never")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()
    again = run_cli("export", "--model", tiny_model_dir, "--output", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_smollm2_sentence_transformers_export(smollm2_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = LlaraEncoder.from_pretrained(smollm2_dir, precision="fp32")
    out = export_encoder(enc, tmp_path / "smollm2-st", "sentence-transformers")
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    assert max_diff(st.encode_query(QUERIES), enc.encode_queries(QUERIES)) < 1e-5
    assert max_diff(st.encode_document(PASSAGES), enc.encode_corpus(PASSAGES)) < 1e-5
    assert st.similarity(st.encode_query(QUERIES[:1]), st.encode_document(PASSAGES[:1])).dtype == torch.float32
