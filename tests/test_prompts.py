import pytest
import torch

from llara.data.beir import format_document
from llara.errors import LlaraError
from llara.modeling.embedder import pool
from llara.modeling.loading import load_model
from llara.modeling.prompts import PromptBuilder, add_special_tokens
from llara.modeling.recipes import RECIPES, SPECIAL_TOKENS


@pytest.fixture(scope="module")
def tokenizer_and_model(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    add_special_tokens(model, tok, RECIPES["reference"])
    return tok, model


def test_special_tokens_added_once_and_embeddings_grow(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    before = model.get_input_embeddings().num_embeddings
    assert add_special_tokens(model, tok, RECIPES["reference"])
    assert model.get_input_embeddings().num_embeddings == before + 16
    assert not add_special_tokens(model, tok, RECIPES["reference"])
    for t in SPECIAL_TOKENS:  # each special token is one id, never split
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1


def test_reference_prompt_ends_with_its_eight_special_tokens(tokenizer_and_model):
    tok, _ = tokenizer_and_model
    b = PromptBuilder(tok, "reference")
    ids = b.wrap(tok("dense retrieval", add_special_tokens=False)["input_ids"], "passage", 64)
    assert ids[-8:] == tok.convert_tokens_to_ids(list(SPECIAL_TOKENS[:8]))
    q = b.wrap(tok("dense retrieval", add_special_tokens=False)["input_ids"], "query", 64)
    assert q[-8:] == tok.convert_tokens_to_ids(list(SPECIAL_TOKENS[8:]))
    assert b.special_ids("query") == q[-8:]


def test_paper_and_repllama_prompts_end_with_eos(tokenizer_and_model):
    tok, _ = tokenizer_and_model
    for name in ("paper", "repllama"):
        b = PromptBuilder(tok, name)
        assert b.build(["a query"], "query", 32)[0][-1] == tok.eos_token_id


def test_truncation_cuts_the_text_never_the_prompt(tokenizer_and_model):
    tok, _ = tokenizer_and_model
    b = PromptBuilder(tok, "reference")
    long_text = " ".join(["retrieval"] * 500)
    ids = b.build([long_text], "passage", 40)[0]
    assert len(ids) == 40
    assert ids[-8:] == b.special_ids("passage")
    prefix, suffix = b.pieces["passage"]
    with pytest.raises(LlaraError, match="no room for text"):
        b.build(["x"], "passage", len(prefix) + len(suffix))


def test_left_padding_and_positions(tokenizer_and_model):
    tok, _ = tokenizer_and_model
    b = PromptBuilder(tok, "reference")
    batch = b.pad([[5, 6, 7], [5, 6, 7, 8, 9, 10, 11, 12, 13]])
    assert batch["input_ids"].shape == (2, 16)  # padded to a multiple of 8
    assert batch["attention_mask"][0].tolist() == [0] * 13 + [1] * 3
    assert batch["position_ids"][0, -3:].tolist() == [0, 1, 2]
    assert batch["position_ids"][1, -9:].tolist() == list(range(9))


def test_pool_last_and_mean():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    last2 = pool(hidden, mask, RECIPES["reference"].__class__(**{**RECIPES["reference"].__dict__, "pool_tokens": 2}))
    assert torch.allclose(last2, hidden[:, -2:].mean(1))
    mean = pool(hidden, mask, RECIPES["mean"])
    assert torch.allclose(mean[0], hidden[0, 2:].mean(0))
    assert torch.allclose(mean[1], hidden[1].mean(0))


def test_format_document_is_beir_title_plus_text():
    assert format_document({"title": "Dewey", "text": "A history."}) == "Dewey A history."
    assert format_document({"title": "", "text": "A history."}) == "A history."
    assert format_document("plain") == "plain"


def test_unknown_recipe_is_a_clear_error(tokenizer_and_model):
    tok, _ = tokenizer_and_model
    with pytest.raises(LlaraError, match="unknown recipe"):
        PromptBuilder(tok, "nope")
