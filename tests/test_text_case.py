"""A text in capitals only is read in lower case (`--text-case fold-capitals`, the default), the same way in
encoding, pretraining, fine-tuning and the sentence-transformers export; llara.json records the choice, and
models written before it keep reading every text as written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from llara.errors import LlaraError
from llara.inference.encoder import LlaraEncoder
from llara.modeling.config import ModelConfig
from llara.modeling.prompts import FOLD_MIN_LETTERS, PromptBuilder, add_special_tokens, read_case
from llara.modeling.recipes import RECIPES
from llara.training.pretrain.data import PretrainDataset, survey_documents
from tests.conftest import run_cli

CAPITALS = "THE KENNEDY ADMINISTRATION ASKED THE GOVERNMENT OF SOUTH VIET NAM TO END THE RAIDS."
TITLED = {"title": "VIET NAM", "text": "THE GOVERNMENT ANSWERED THE PRESSURE FROM WASHINGTON WITH SILENCE."}


def test_read_case_folds_only_long_texts_without_a_lower_case_letter():
    assert read_case(CAPITALS) == CAPITALS.lower()
    assert read_case("NASA") == "NASA"  # an acronym or a code: as written
    assert read_case("A" * (FOLD_MIN_LETTERS - 1) + " 1999") == "A" * (FOLD_MIN_LETTERS - 1) + " 1999"
    assert read_case("A" * FOLD_MIN_LETTERS) == "a" * FOLD_MIN_LETTERS
    assert read_case("The NASA and the ESA, CERN, IAEA, WHO, UNESCO") == "The NASA and the ESA, CERN, IAEA, WHO, UNESCO"
    assert read_case(CAPITALS, "as-given") == CAPITALS
    assert read_case("") == "" and read_case("1999 2000") == "1999 2000"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from llara.modeling.loading import load_model

    model, tok = load_model(tiny_model_dir)
    add_special_tokens(model, tok, RECIPES["reference"])
    return tok


def test_the_builder_reads_capitals_as_lower_case_and_as_given_as_written(tokenizer):
    fold = PromptBuilder(tokenizer, "reference", "fold-capitals")
    given = PromptBuilder(tokenizer, "reference")  # a bare builder reads what the reference code reads
    lower = given.build([CAPITALS.lower()], "passage", 128)
    assert fold.build([CAPITALS], "passage", 128) == lower
    assert given.build([CAPITALS], "passage", 128) != lower
    assert fold.build(["NASA"], "query", 32) == given.build(["NASA"], "query", 32)
    with pytest.raises(LlaraError, match="unknown text case 'upper'"):
        PromptBuilder(tokenizer, "reference", "upper")


def test_a_capitals_document_is_split_in_lower_case_title_and_all(tokenizer):
    fold = PromptBuilder(tokenizer, "reference", "fold-capitals")
    long_doc = {"title": "VIET NAM", "text": " ".join([CAPITALS] * 6)}
    mixed = {"title": "Viet Nam", "text": "It answered."}
    found = fold.passages([long_doc, mixed], 128)
    assert found.long == 1 and found.folded == 1 and len(found.texts) > 2
    assert all(t.startswith("viet nam ") and t == t.lower() for t in found.texts[:-1])
    assert found.texts[-1] == "Viet Nam It answered."
    assert "1 in capitals only, read in lower case" in found.counts().summary(128)
    assert found.counts().record()["documents_folded"] == 1
    assert PromptBuilder(tokenizer, "reference").passages([long_doc], 128).folded == 0


def test_llara_json_records_the_text_case_and_older_models_read_as_written(tmp_path):
    assert ModelConfig().text_case == "fold-capitals"
    config = ModelConfig(text_case="as-given")
    config.save(tmp_path)
    assert json.loads((tmp_path / "llara.json").read_text())["text_case"] == "as-given"
    assert ModelConfig.load(tmp_path) == config
    assert config.override(text_case="fold-capitals").text_case == "fold-capitals"
    (tmp_path / "llara.json").write_text(json.dumps({"recipe": "reference"}))  # written before the setting
    assert ModelConfig.load(tmp_path).text_case == "as-given"
    (tmp_path / "llara.json").write_text(json.dumps({"text_case": "lower"}))
    with pytest.raises(LlaraError, match=r"llara\.json.*text_case"):
        ModelConfig.load(tmp_path)


def test_the_encoder_reads_the_models_text_case_and_saves_it(tiny_model_dir, tmp_path):
    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")  # no llara.json: the default
    assert encoder.config()["text_case"] == "fold-capitals"
    assert np.allclose(encoder.encode([CAPITALS]), encoder.encode([CAPITALS.lower()]), atol=1e-6)
    lowered = {key: value.lower() for key, value in TITLED.items()}
    assert np.allclose(encoder.encode_corpus([TITLED]), encoder.encode_corpus([lowered]), atol=1e-6)
    LlaraEncoder.from_pretrained(tiny_model_dir, text_case="as-given").save_pretrained(tmp_path / "given")
    again = LlaraEncoder.from_pretrained(tmp_path / "given", precision="fp32")
    assert again.model_config().text_case == "as-given"
    assert not np.allclose(again.encode([CAPITALS]), again.encode([CAPITALS.lower()]), atol=1e-3)


def test_the_sentence_transformers_export_keeps_the_text_case(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from llara.integrations.export import export_encoder

    encoder = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")
    out = export_encoder(encoder, tmp_path / "st", "sentence-transformers")
    assert json.loads((out / "llara.json").read_text())["text_case"] == "fold-capitals"
    st = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    assert np.abs(st.encode_document([CAPITALS]) - encoder.encode_corpus([CAPITALS.lower()])).max() < 1e-5


def test_pretraining_reads_a_capitals_document_as_the_encoder_does(tmp_path, tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    upper = tmp_path / "upper.txt"
    upper.write_text(f"{CAPITALS} {CAPITALS}\n\nThe NASA report. It was read.\n")
    lower = tmp_path / "lower.txt"
    lower.write_text(f"{CAPITALS.lower()} {CAPITALS.lower()}\n\nThe NASA report. It was read.\n")

    def chunks(path, text_case):
        return list(PretrainDataset(path, tok, 16, text_case=text_case).chunks())

    assert chunks(upper, "fold-capitals") == chunks(lower, "as-given")
    assert chunks(upper, "as-given") != chunks(lower, "as-given")
    assert survey_documents(upper, "fold-capitals") == (2, 1) and survey_documents(upper, "as-given") == (2, 0)
    rows = tmp_path / "reference.jsonl"  # reference-format rows: the targets are read the same way
    rows.write_text(json.dumps({"input": CAPITALS, "output_summarize": CAPITALS, "output_predict": "NASA"}) + "\n")
    (row,) = PretrainDataset(rows, tok, 64, text_case="fold-capitals").chunks()
    assert row["text_ids"] == tok(CAPITALS.lower(), add_special_tokens=False)["input_ids"][:64]
    assert row["own_ids"] == tok(CAPITALS.lower(), truncation=True, max_length=64)["input_ids"]
    assert row["next_ids"] == tok("NASA", truncation=True, max_length=64)["input_ids"]


def test_cli_pretrain_records_text_case_as_given(tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(f"{CAPITALS}\n\nThe library is a system of information. The index is a model.\n" * 3)
    out = tmp_path / "out"
    res = run_cli(
        "pretrain", "--model", tiny_model_dir, "--corpus", corpus, "--output", out, "--max-steps", "1",
        "--batch-size", "2", "--chunk-tokens", "72", "--precision", "fp32", "--text-case", "as-given",
        "--halve-short",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    record = json.loads((out / "llara.json").read_text())
    assert record["text_case"] == "as-given"
    assert record["training"][-1]["halve_short"] is True  # the run's switches travel with the model
    assert "in capitals only" not in res.stderr
    bad = run_cli("pretrain", "--model", tiny_model_dir, "--corpus", corpus, "--output", tmp_path / "b",
                  "--max-steps", "1", "--text-case", "lower")  # fmt: skip
    assert bad.returncode == 2 and "--text-case" in bad.stderr
