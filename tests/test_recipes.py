"""Recipes are data: the built-ins ship as files, a user's file goes through the same loader, mistakes
are named by file and field, and the recipe a model was saved with travels with it (llara.json, index
metadata, the sentence-transformers folder) so it encodes the same way without the file."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from llara.errors import LlaraError
from llara.inference.encoder import LlaraEncoder
from llara.modeling.config import ModelConfig
from llara.modeling.prompts import PromptBuilder
from llara.modeling.recipes import BUILTIN_RECIPES, RECIPES, Recipe, load_recipe, read_recipe
from tests.conftest import make_tokenizer, run_cli

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["dense retrieval with a large language model", "what is a library", "eight words"]
PASSAGES = ["Dense retrieval embeds texts as vectors.", "a library information system " * 40]

# What prompts.py hard-coded before recipes became files: (prefix, suffix) per side, pooling, tokens, bos.
_S = tuple(f"<s{i}>" for i in range(1, 17))
OLD = {
    "reference": (
        ('"', '", summarize the above passage within eight words: ' + "".join(_S[:8])),
        ('"', '", predict the following passage within eight words: ' + "".join(_S[8:])),
        "last",
        8,
        _S,
    ),
    "paper": (("", " The original sentence: {eos}"), ("", " The next sentence: {eos}"), "last", 1, ()),
    "repllama": (("passage: ", "{eos}"), ("query: ", "{eos}"), "last", 1, ()),
    "mean": (("passage: ", "{eos}"), ("query: ", "{eos}"), "mean", 0, ()),
}


GUIDE = ROOT / "docs" / "guide-recipes.md"


def guide_recipe() -> str:
    """The TOML example of docs/guide-recipes.md's "Your own recipe", verbatim: the docs cannot drift
    from the test."""
    guide = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```toml\n(.*?)^```", guide, flags=re.S | re.M)
    assert len(blocks) == 1, "docs/guide-recipes.md should hold one TOML recipe example"
    return blocks[0]


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ built-ins
def test_builtins_ship_as_files_and_equal_the_old_hard_coded_recipes(tmp_path):
    shipped = resources.files("llara.modeling") / "builtin_recipes"
    assert sorted(p.name for p in shipped.iterdir() if p.name.endswith(".toml")) == sorted(
        f"{n}.toml" for n in BUILTIN_RECIPES
    )
    for add_bos in (False, True):  # BOS-adding tokenizers (LLaMA-2, Mistral) and others
        tok = make_tokenizer(tmp_path / f"tok{add_bos}", add_bos=add_bos)
        tok.add_tokens(list(_S), special_tokens=True)
        for name, (passage, query, pooling, pool_tokens, special) in OLD.items():
            recipe = load_recipe(name)
            assert recipe is RECIPES[name] and recipe.name == name and recipe.builtin
            assert (recipe.pooling, recipe.pool_tokens, recipe.special_tokens, recipe.bos) == (
                pooling,
                pool_tokens,
                special,
                True,
            )
            assert (recipe.prefix("passage"), recipe.suffix("passage")) == passage
            assert (recipe.prefix("query"), recipe.suffix("query")) == query
            builder = PromptBuilder(tok, recipe)
            for side, (prefix, suffix) in (("passage", passage), ("query", query)):
                old_ids = (
                    tok(prefix, add_special_tokens=True)["input_ids"],
                    tok(suffix.replace("{eos}", tok.eos_token), add_special_tokens=False)["input_ids"],
                )
                assert builder.pieces[side] == old_ids, (name, side)
            # the same file through the user path gives the same recipe
            assert load_recipe(recipe.source) == recipe and read_recipe(recipe.source) == recipe
            assert Recipe.from_dict(recipe.to_dict()) == recipe and recipe.record() == name


# ------------------------------------------------------------------------ the recipe guide's example
def test_guide_recipe_embeds_like_a_hand_built_prompt(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = write(tmp_path, "my_recipe.toml", guide_recipe())
    recipe = load_recipe(path)
    assert recipe.name == "instruct" and not recipe.builtin and isinstance(recipe.record(), dict)
    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=path, precision="fp32", device="cpu")
    assert encoder.recipe == recipe

    # By hand: the exact prompt string, tokenised the way llara documents (prefix, text and suffix
    # each on its own, only the text truncated), run through the plain HF model, last token pooled.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    instruction = "Instruct: Given a title, retrieve the paper's abstract\nQuery: "

    def by_hand(texts: list[str], prefix: str) -> np.ndarray:
        out = []
        for text in texts:
            ids = (
                tokenizer(prefix)["input_ids"]
                + tokenizer(text, add_special_tokens=False)["input_ids"]
                + [tokenizer.eos_token_id]
            )
            assert tokenizer.decode(ids) == prefix + text + tokenizer.eos_token  # the exact string
            with torch.no_grad():
                hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state
            out.append(torch.nn.functional.normalize(hidden[0, -1], dim=-1).numpy())
        return np.stack(out)

    np.testing.assert_allclose(encoder.encode_queries(QUERIES), by_hand(QUERIES, instruction), atol=1e-5)
    np.testing.assert_allclose(encoder.encode_corpus(PASSAGES[:1]), by_hand(PASSAGES[:1], ""), atol=1e-5)
    # and the instruction is what changed the query embedding
    plain = LlaraEncoder.from_pretrained(tiny_model_dir, recipe="repllama", precision="fp32", device="cpu")
    assert np.abs(plain.encode_queries(QUERIES) - encoder.encode_queries(QUERIES)).max() > 1e-3


def test_json_recipe_file_is_the_same_recipe(tmp_path):
    toml = load_recipe(write(tmp_path, "instruct.toml", guide_recipe()))
    data = {k: v for k, v in toml.to_dict().items() if k != "name"}  # the name defaults to the file's stem
    assert load_recipe(write(tmp_path, "instruct.json", json.dumps(data))) == toml


# ------------------------------------------------------------------------------------------ mistakes
GOOD = {"passage": "{text}{eos}", "query": "query: {text}{eos}", "pooling": "last"}


def toml_of(data: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in data.items())  # JSON scalars and lists are TOML


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"query": "query: {eos}"}, "query", "missing the {text} placeholder"),
        ({"query": "{text} and {text}"}, "query", "2 {text} placeholders"),
        ({"temperature": 0.01}, "temperature", "unknown field"),
        ({"pooling": "max"}, "pooling", "unknown pooling 'max'"),
        ({"pool_tokens": "8"}, "pool_tokens", "expected an integer"),
        ({"pool_tokens": 0}, "pool_tokens", "at least 1 token"),
        ({"pool_tokens": 3}, "pool_tokens", "pools the last 3 tokens"),
        ({"pooling": "mean", "pool_tokens": 8}, "pool_tokens", "mean pooling"),
        ({"bos": "yes"}, "bos", "expected true or false"),
        ({"special_tokens": "<a>"}, "special_tokens", "expected a list"),
        ({"special_tokens": ["<a>"]}, "special_tokens", "appears in neither template"),
        ({"query": "{instruction}: {text}{eos}"}, "instruction", "gives no instruction"),
        ({"instruction": "Find papers"}, "instruction", "neither template uses"),
        ({"query": "{Text}{eos}"}, "query", "unknown placeholder {Text}"),
        ({"name": "my recipe"}, "name", "not a recipe name"),
        ({"name": "reference"}, "name", "built-in recipe's name"),
    ],
)
def test_bad_recipe_file_names_the_file_and_the_field(tmp_path, change, field, message):
    path = write(tmp_path, "bad.toml", toml_of({**GOOD, **change}))
    with pytest.raises(LlaraError) as caught:
        load_recipe(path)
    assert caught.value.path == path and caught.value.field == field
    assert message in str(caught.value) and str(caught.value).startswith(f"{path}: field '{field}'")


def test_missing_field_unreadable_file_and_unknown_name(tmp_path):
    with pytest.raises(LlaraError, match=r"bad\.toml: field 'pooling': missing"):
        load_recipe(write(tmp_path, "bad.toml", toml_of({k: v for k, v in GOOD.items() if k != "pooling"})))
    with pytest.raises(LlaraError, match=r"bad2\.toml: not valid TOML"):
        load_recipe(write(tmp_path, "bad2.toml", 'passage = "{text}'))
    with pytest.raises(LlaraError, match=r"bad\.json:1: not valid JSON"):
        load_recipe(write(tmp_path, "bad.json", "{passage"))
    with pytest.raises(LlaraError, match=r"gone\.toml: no such recipe file"):
        load_recipe(tmp_path / "gone.toml")
    with pytest.raises(LlaraError, match=r"unknown recipe 'referenec'; choose one of reference, paper"):
        load_recipe("referenec")
    with pytest.raises(LlaraError, match=r"llara\.json: field 'recipe_spec\.query': missing the \{text\}"):
        ModelConfig.from_dict({"recipe": "x", "recipe_spec": {**GOOD, "name": "x", "query": "q"}}, Path("llara.json"))
    with pytest.raises(LlaraError, match=r"llara\.json: field 'recipe': unknown recipe 'x' and no recipe_spec"):
        ModelConfig.from_dict({"recipe": "x"}, Path("llara.json"))


def test_more_pooled_tokens_than_the_tokenizer_gives_the_suffix(tmp_path):
    # " a" passes the file's own bound (a few bytes) but is one token on this tokenizer
    path = write(
        tmp_path, "short.toml", toml_of({**GOOD, "passage": "{text} a", "query": "{text} a", "pool_tokens": 2})
    )
    recipe = load_recipe(path)
    tok = make_tokenizer(tmp_path / "tok")
    with pytest.raises(LlaraError, match=r"short\.toml: field 'pool_tokens': .*passage template has only 1"):
        PromptBuilder(tok, recipe)


def test_cli_exits_2_on_a_bad_recipe_without_a_traceback(tiny_model_dir, tmp_path):
    corpus = write(tmp_path, "corpus.jsonl", json.dumps({"_id": "d1", "text": "a passage"}) + "\n")
    bad = write(tmp_path, "bad.toml", toml_of({**GOOD, "query": "query: {eos}"}))
    res = run_cli(
        "encode", "--model", tiny_model_dir, "--corpus", corpus, "--output", tmp_path / "emb", "--recipe", bad
    )
    last = res.stderr.strip().splitlines()[-1]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert last.startswith("error:") and "bad.toml" in last and "'query'" in last and "{text}" in last
    assert not (tmp_path / "emb").exists()


# ------------------------------------------------------------------------- the recipe travels along
CUSTOM = """
name = "tagged"
passage = "doc: {text} <emb>"
query = "{instruction}: {text} <emb>"
instruction = "find the passage"
special_tokens = ["<emb>"]
pooling = "last"
bos = false
"""


def test_saved_model_encodes_the_same_without_the_recipe_file(tiny_model_dir, tmp_path):
    path = write(tmp_path / "recipes", "tagged.toml", CUSTOM)
    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=path, precision="fp32", device="cpu")
    q, p = encoder.encode_queries(QUERIES), encoder.encode_corpus(PASSAGES)
    encoder.save_pretrained(tmp_path / "model")
    path.unlink()

    saved = json.loads((tmp_path / "model" / "llara.json").read_text())
    assert saved["recipe"] == "tagged" and saved["recipe_spec"] == encoder.recipe.to_dict()
    assert ModelConfig.load(tmp_path / "model").recipe_spec == encoder.recipe
    again = LlaraEncoder.from_pretrained(tmp_path / "model", precision="fp32", device="cpu")
    assert again.recipe == encoder.recipe
    np.testing.assert_allclose(again.encode_queries(QUERIES), q, atol=1e-6)
    np.testing.assert_allclose(again.encode_corpus(PASSAGES), p, atol=1e-6)
    # naming the saved recipe keeps it; another recipe given explicitly wins
    assert LlaraEncoder.from_pretrained(tmp_path / "model", recipe="tagged").recipe == encoder.recipe
    assert ModelConfig.of(tmp_path / "model").override("paper").recipe_spec == RECIPES["paper"]
    # a llara.json written before recipes were saved whole (a built-in's name only) still loads
    (tmp_path / "model" / "llara.json").write_text(json.dumps({"recipe": "paper"}))
    assert ModelConfig.load(tmp_path / "model").recipe_spec is RECIPES["paper"]


def test_hf_and_sentence_transformers_exports_keep_the_recipe(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from llara.integrations.export import export_encoder

    path = write(tmp_path, "tagged.toml", CUSTOM)
    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=path, precision="fp32", device="cpu")
    q, p = encoder.encode_queries(QUERIES), encoder.encode_corpus(PASSAGES)
    hf = export_encoder(encoder, tmp_path / "hf", "hf")
    st_dir = export_encoder(encoder, tmp_path / "st", "sentence-transformers")
    path.unlink()
    for folder in (hf, st_dir):
        assert ModelConfig.load(folder).recipe_spec == encoder.recipe
        again = LlaraEncoder.from_pretrained(folder, precision="fp32", device="cpu")
        np.testing.assert_allclose(again.encode_queries(QUERIES), q, atol=1e-5)
    st = SentenceTransformer(str(st_dir), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(st.encode_query(QUERIES), q, atol=1e-5)
    np.testing.assert_allclose(st.encode_document(PASSAGES), p, atol=1e-5)
    st.save(str(tmp_path / "st-again"))  # the module's own save keeps the recipe too
    assert ModelConfig.load(tmp_path / "st-again").recipe_spec == encoder.recipe


def test_index_records_a_user_recipe_so_search_needs_no_file(tiny_model_dir, tmp_path):
    from llara.inference.corpus import encode_corpus_file
    from llara.retrieval.index import DenseIndex, build_index, dense_run

    path = write(tmp_path, "tagged.toml", CUSTOM)
    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=path, precision="fp32", device="cpu")
    rows = [{"_id": f"d{i}", "text": t} for i, t in enumerate(PASSAGES + QUERIES)]
    corpus = write(tmp_path, "corpus.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    encode_corpus_file(encoder, corpus, tmp_path / "emb", show_progress_bar=False)
    build_index(tmp_path / "emb", tmp_path / "idx", "flat")
    path.unlink()
    index = DenseIndex(tmp_path / "idx")
    assert index.meta["recipe"] == encoder.recipe.to_dict()
    # what `llara search` does: the encoder from the index's recorded recipe
    again = LlaraEncoder.from_pretrained(tiny_model_dir, recipe=index.meta["recipe"], precision="fp32", device="cpu")
    index.check_encoder(again)
    run = dense_run(index, again, {"q": QUERIES[0]}, 3, 8, None)
    scores = encoder.encode_queries(QUERIES[:1]) @ encoder.encode_corpus([r["text"] for r in rows]).T
    best = int(np.argmax(scores[0]))
    assert max(run["q"], key=run["q"].get) == f"d{best}" and run["q"][f"d{best}"] == pytest.approx(scores[0, best])
    with pytest.raises(LlaraError, match="recipe"):  # the same model with another recipe is refused
        index.check_encoder(LlaraEncoder.from_pretrained(tiny_model_dir, recipe="repllama", device="cpu"))


SHARED_PREFIX = """
name = "short"
passage = "text: {text} summary: <e1>"
query = "text: {text} next: <e2>"
special_tokens = ["<e1>", "<e2>"]
pooling = "last"
"""


@pytest.mark.slow
def test_pretrain_then_finetune_keep_a_user_recipe(tiny_model_dir, tmp_path):
    text = "The library is a system of information. A dense passage retrieval model embeds text.\n\n" * 6
    corpus = write(tmp_path, "corpus.txt", text)
    path = write(tmp_path, "short.toml", SHARED_PREFIX)
    recipe = load_recipe(path)
    pt, ft = tmp_path / "pt", tmp_path / "ft"
    res = run_cli("pretrain", "--model", tiny_model_dir, "--corpus", corpus, "--output", pt, "--recipe", path,
                  "--max-steps", "2", "--batch-size", "2", "--chunk-tokens", "72", "--precision", "fp32")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    path.unlink()
    assert ModelConfig.load(pt).recipe_spec == recipe
    rows = [{"query": f"what is {w}", "pos": [f"{w} retrieval index"], "neg": ["library"]} for w in ("a", "b", "c")]
    train = write(tmp_path, "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli("finetune", "--model", pt, "--train", train, "--output", ft, "--max-steps", "1",
                  "--group-size", "2", "--precision", "fp32")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    config = ModelConfig.load(ft)
    assert config.recipe_spec == recipe and [s["stage"] for s in config.training] == ["pretrain", "finetune"]
    encoder = LlaraEncoder.from_pretrained(ft, device="cpu")
    assert encoder.recipe == recipe and encoder.prompts.special_ids("query") == [encoder.tokenizer.vocab["<e2>"]]


def test_pretraining_refuses_a_recipe_without_a_shared_prefix(tiny_model_dir, tmp_path):
    from llara.training.pretrain.trainer import check_pretrain_recipe

    path = write(tmp_path, "my_recipe.toml", guide_recipe())
    with pytest.raises(LlaraError, match=r"my_recipe\.toml: field 'query': .*one shared prefix"):
        check_pretrain_recipe(load_recipe(path))
    with pytest.raises(LlaraError, match=r"field 'pooling': .*needs pooling 'last'"):
        check_pretrain_recipe(load_recipe("mean"))
