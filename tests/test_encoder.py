import numpy as np
import pytest
import torch

from llara.inference.encoder import LlaraEncoder
from tests.conftest import make_tiny_model

TEXTS = [
    "dense retrieval with large language models",
    "a library information system",
    "what is information science",
    "the next sentence",
    "eight words",
]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return LlaraEncoder.from_pretrained(tiny_model_dir, recipe="reference", precision="fp32")


def test_encode_shape_dtype_norm(encoder):
    emb = encoder.encode(TEXTS, batch_size=2)
    assert emb.shape == (len(TEXTS), encoder.dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    single = encoder.encode(TEXTS[0])
    assert single.shape == (encoder.dim,)


def test_embedding_does_not_depend_on_batch_or_order(encoder):
    alone = np.stack([encoder.encode([t])[0] for t in TEXTS])
    batched = encoder.encode(TEXTS, batch_size=len(TEXTS))
    assert np.allclose(alone, batched, atol=1e-5)  # left padding + real position ids
    reversed_ = encoder.encode(TEXTS[::-1], batch_size=3)[::-1]
    assert np.allclose(batched, reversed_, atol=1e-5)


def test_token_budget_batches_give_the_same_embeddings(encoder):
    a = encoder.encode(TEXTS, batch_size=32)
    b = encoder.encode(TEXTS, max_tokens_per_batch=40)
    assert np.allclose(a, b, atol=1e-5)


def test_queries_and_passages_use_different_prompts(encoder):
    q = encoder.encode_queries(TEXTS[:2])
    p = encoder.encode_corpus([{"title": "", "text": t} for t in TEXTS[:2]])
    assert not np.allclose(q, p)
    assert np.allclose(p, encoder.encode(TEXTS[:2], side="passage"))
    assert np.allclose(q, encoder.encode(TEXTS[:2], prompt_type="query"))


def test_long_queries_are_read_whole_by_default(tiny_model_dir):
    """A query is read up to QUERY_MAX_LENGTH tokens (256), not the reference's training length (64): two
    queries that differ only after their first 40 words embed apart, and alike when cut at 64 tokens."""
    from llara.settings import QUERY_MAX_LENGTH

    head = " ".join(["information retrieval for library catalogues"] * 8)  # 40 words
    queries = [f"{head} about medicine", f"{head} about newspapers"]
    whole = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")
    assert whole.max_length["query"] == QUERY_MAX_LENGTH == 256
    assert max(len(ids) for ids in whole.prompts.build(queries, "query", 10_000)) <= QUERY_MAX_LENGTH
    a, b = whole.encode_queries(queries)
    assert not np.allclose(a, b, atol=1e-4)
    cut = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32", query_max_length=64)
    a, b = cut.encode_queries(queries)
    assert np.allclose(a, b, atol=1e-6)


def test_unnormalised_and_torch_output(encoder):
    t = encoder.encode(TEXTS[:2], normalize_embeddings=False, convert_to_numpy=False)
    assert isinstance(t, torch.Tensor) and not torch.allclose(t.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("recipe", ["paper", "repllama", "mean"])
def test_other_recipes_encode(tiny_model_dir, recipe):
    enc = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=recipe, precision="fp32")
    assert enc.encode(TEXTS[:3]).shape == (3, enc.dim)


@pytest.mark.parametrize("arch", ["mistral", "qwen2"])
def test_llama_family_models_work(tmp_path, arch):
    enc = LlaraEncoder.from_pretrained(make_tiny_model(tmp_path / arch, arch=arch), precision="fp32")
    emb = enc.encode(TEXTS[:3])
    assert emb.shape == (3, 64) and np.isfinite(emb).all()


def test_bf16_autocast_stays_close_to_fp32(tiny_model_dir):
    fp32 = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32").encode(TEXTS)
    bf16 = LlaraEncoder.from_pretrained(tiny_model_dir, precision="bf16").encode(TEXTS)
    assert (fp32 * bf16).sum(1).mean() > 0.99


def test_save_pretrained_round_trip(encoder, tmp_path):
    encoder.save_pretrained(tmp_path / "saved")
    again = LlaraEncoder.from_pretrained(tmp_path / "saved", precision="fp32")
    assert again.recipe.name == "reference"
    assert np.allclose(encoder.encode(TEXTS), again.encode(TEXTS), atol=1e-6)
    assert again.fingerprint() == encoder.fingerprint()
