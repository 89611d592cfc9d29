"""llara.json: one schema, read back from every layout llara has written, bad files refused clearly."""

from __future__ import annotations

import json

import pytest

from llara.errors import LlaraError
from llara.modeling.config import ModelConfig
from llara.settings import QUERY_MAX_LENGTH


def write(folder, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llara.json").write_text(json.dumps(data) if not isinstance(data, str) else data)
    return folder


def test_round_trip_and_overrides(tmp_path):
    config = ModelConfig().trained({"stage": "pretrain", "chunk_tokens": 128}, recipe="paper")
    config = config.trained({"stage": "finetune"}, query_max_length=32, passage_max_length=128)
    config.save(tmp_path)
    saved = json.loads((tmp_path / "llara.json").read_text())
    assert saved["pooling"] == "last-1" and saved["llara_version"]
    back = ModelConfig.load(tmp_path)
    assert back == config and [s["stage"] for s in back.training] == ["pretrain", "finetune"]
    assert back.override(query_max_length=50) == config.override(None, 50, None)
    assert back.override(query_max_length=50).passage_max_length == 128
    assert ModelConfig.load(tmp_path / "missing") is None and ModelConfig.of(tmp_path / "missing") == ModelConfig()


def test_layouts_written_by_earlier_versions_still_load(tmp_path):
    nested = {"query_max_length": 32, "passage_max_length": 128, "group_size": 4}
    finetuned = write(tmp_path / "ft", {"recipe": "reference", "finetune": nested})
    config = ModelConfig.load(finetuned)
    assert (config.query_max_length, config.passage_max_length) == (32, 128)
    assert config.training == ({"stage": "finetune", **nested},)
    pretrained = write(tmp_path / "pt", {"recipe": "paper", "stage": "pretrain", "chunk_tokens": 96, "lm_loss": False})
    config = ModelConfig.load(pretrained)
    assert config.recipe == "paper" and config.training[0]["chunk_tokens"] == 96
    assert config.query_max_length == QUERY_MAX_LENGTH  # none saved: the default


@pytest.mark.parametrize(
    "content, field",
    [('{"recipe": 3}', "recipe"), ('{"query_max_length": 0}', "query_max_length"),
     ('{"passage_max_length": "long"}', "passage_max_length"), ('{"training": {"a": 1}}', "training"),
     ('{"fusion": [0.3]}', "fusion")],
)  # fmt: skip
def test_bad_config_names_file_and_field(tmp_path, content, field):
    with pytest.raises(LlaraError, match=rf"llara\.json.*{field}"):
        ModelConfig.load(write(tmp_path, content))


def test_malformed_json_is_a_clear_error(tmp_path):
    with pytest.raises(LlaraError, match=r"llara\.json.*not valid JSON"):
        ModelConfig.load(write(tmp_path, "{recipe"))


def test_a_recorded_fusion_round_trips_and_is_not_inherited_by_a_new_model(tmp_path):
    from dataclasses import replace

    record = {"corpus_sha256": "ab", "method": "auto", "weight": 0.3, "evidence": {"pairs": 5}}
    config = replace(ModelConfig(), fusion=record)
    config.save(tmp_path)
    assert json.loads((tmp_path / "llara.json").read_text())["fusion"] == record
    assert ModelConfig.load(tmp_path).fusion == record
    assert config.trained({"stage": "finetune"}).fusion is None  # fine-tuned further: another model
    assert "fusion" not in ModelConfig().to_dict()
