import json

import numpy as np
import pytest
import torch

from llara.inference.encoder import LlaraEncoder
from llara.inference.explain import compare, explain, explain_many, vocabulary_distributions
from tests.conftest import run_cli

TEXT = "dense retrieval with large language models"


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return LlaraEncoder.from_pretrained(tiny_model_dir, recipe="reference", precision="fp32")


def test_top_k_is_sorted_probabilities_without_special_tokens(encoder):
    e = explain(encoder, TEXT, top_k=15)
    probs = [t.prob for t in e.tokens]
    assert len(e.tokens) == 15
    assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-6 and e.top_k_mass == pytest.approx(sum(probs), rel=1e-5)
    hidden = set(encoder.tokenizer.all_special_ids) | set(
        encoder.tokenizer.convert_tokens_to_ids(list(encoder.recipe.special_tokens))
    )
    assert not hidden & {t.id for t in e.tokens}
    assert all(encoder.tokenizer.decode([t.id]) == t.token for t in e.tokens)


def test_in_text_flags_and_reconstruction_rate(encoder):
    e = explain(encoder, TEXT, top_k=40)
    own = set(encoder.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert e.text_token_count == len(own)
    assert [t.in_text for t in e.tokens] == [t.id in own for t in e.tokens]
    hits = sum(t.in_text for t in e.tokens)
    assert e.reconstruction == pytest.approx(hits / min(40, len(own)))


@pytest.mark.parametrize("recipe,positions", [("reference", 8), ("paper", 1)])
def test_distribution_is_the_objectives_read_out(tiny_model_dir, recipe, positions):
    """Recompute independently with the full causal-LM forward: logits at the pooled positions (the
    8 special tokens, or the final </s>), max over positions, softmax."""
    enc = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=recipe, precision="fp32")
    texts = [TEXT, "a much longer text about a library information system and its users"]
    probs, emb = vocabulary_distributions(enc, texts, "query")
    for i, text in enumerate(texts):
        ids = enc.prompts.build([text], "query", 64)[0]
        with torch.no_grad():
            logits = enc.model(input_ids=torch.tensor([ids])).logits[0, -positions:]
        expected = torch.softmax(logits.amax(0), -1)
        assert torch.allclose(probs[i], expected, atol=1e-5)
    assert np.allclose(emb.numpy(), enc.encode_queries(texts), atol=1e-5)


def test_sides_use_different_prompts(encoder):
    p = explain(encoder, TEXT, side="passage")
    q = explain(encoder, TEXT, side="query")
    assert [t.prob for t in p.tokens] != [t.prob for t in q.tokens]
    assert np.allclose(p.embedding, encoder.encode(TEXT), atol=1e-5)


def test_compare_shares_tokens_and_scores_like_the_retriever(encoder):
    c = compare(encoder, "what is dense retrieval", "dense retrieval with a vector index", top_k=30)
    q_ids, d_ids = {t.id for t in c.query.tokens}, {t.id for t in c.document.tokens}
    assert {t.id for t in c.shared} == q_ids & d_ids
    score = (
        encoder.encode_queries(["what is dense retrieval"]) @ encoder.encode(["dense retrieval with a vector index"]).T
    )
    assert c.cosine == pytest.approx(float(score[0, 0]), abs=1e-5)
    assert c.query.side == "query" and c.document.side == "passage"


def test_batch_matches_single(encoder):
    many = explain_many(encoder, [TEXT, "the next sentence"], top_k=5)
    assert [t.id for t in many[0].tokens] == [t.id for t in explain(encoder, TEXT, top_k=5).tokens]


@pytest.mark.slow
def test_cli_table_json_and_bad_arguments(tiny_model_dir):
    r = run_cli("explain", "--model", tiny_model_dir, TEXT, "--top-tokens", "5")
    assert r.returncode == 0, r.stderr
    assert "self-reconstruction" in r.stdout and "EBAE" in r.stdout
    pair = ("--query", "what is x", "--document", TEXT)
    r = run_cli("explain", "-m", tiny_model_dir, *pair, "--json", "--top-tokens", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["query"]["tokens"]) == 4 and -1 <= out["cosine"] <= 1
    bad = run_cli("explain", "-m", tiny_model_dir, "--query", "only a query")
    assert bad.returncode == 2 and "error" in bad.stderr and "Traceback" not in bad.stderr


def test_smollm2_reads_its_own_words(smollm2_dir):
    enc = LlaraEncoder.from_pretrained(smollm2_dir, precision="fp32")
    text = "Dense retrieval encodes queries and documents into vectors with a large language model."
    e = explain(enc, text, top_k=20)
    # Even before adaptation the summarize prompt puts some of the text's own words in its top 20.
    assert e.reconstruction > 0 and any(t.in_text and t.token.strip().isalpha() for t in e.tokens)
    c = compare(enc, "what is dense retrieval", text, top_k=20)
    assert c.shared and 0 < c.cosine <= 1
