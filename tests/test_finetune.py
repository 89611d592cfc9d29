"""`llara finetune`: input validation, group sampling, and end-to-end runs on a tiny random LLaMA."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from llara.errors import LlaraError
from llara.settings import PASSAGE_MAX_LENGTH, QUERY_MAX_LENGTH
from llara.training.finetune.data import TrainDataset, read_train_file
from tests.conftest import run_cli


def write_rows(path, rows) -> object:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"query": f"what is {w} retrieval", "pos": [f"{w} dense passage retrieval index"], "neg": [f"library {w}", "data"]}
    for w in ("dense", "vector", "token", "language", "search", "model")
]


def test_bad_rows_name_file_and_line(tmp_path):
    bad = write_rows(tmp_path / "t.jsonl", [ROWS[0], {"query": "q", "pos": [], "neg": ["n"]}])
    with pytest.raises(LlaraError, match=r"t\.jsonl:2: field 'pos': no positive"):
        read_train_file(bad)
    broken = write_rows(tmp_path / "b.jsonl", [ROWS[0], ROWS[1], '{"query": "q", "pos": ["p"]\n'])
    with pytest.raises(LlaraError, match=r"b\.jsonl:3: malformed JSON"):
        read_train_file(broken)
    wrong = write_rows(tmp_path / "w.jsonl", [{"query": "q", "pos": [3]}])
    with pytest.raises(LlaraError, match=r"w\.jsonl:1: field 'pos'"):
        read_train_file(wrong)
    # extra fields are ignored; Tevatron-style {"title", "text"} passages are accepted
    ok = write_rows(tmp_path / "ok.jsonl", [{"query": "q", "pos": [{"title": "T", "text": "x"}], "neg": [], "id": 7}])
    assert read_train_file(ok)[0].pos == [{"title": "T", "text": "x"}]  # kept: split reading carries the title


def test_group_sampling_is_deterministic_and_repeats_when_short(tmp_path):
    examples = read_train_file(write_rows(tmp_path / "t.jsonl", ROWS))
    ds = TrainDataset(examples, group_size=4, seed=1)
    q, group = ds[0]
    assert q == ROWS[0]["query"] and len(group) == 4 and group[0] in ROWS[0]["pos"]
    assert set(group[1:]) == set(ROWS[0]["neg"])  # 2 negatives for 3 slots: both used, then a repeat
    assert ds[0] == TrainDataset(examples, group_size=4, seed=1)[0]
    many = read_train_file(
        write_rows(tmp_path / "m.jsonl", [{"query": "q", "pos": ["p1", "p2"], "neg": [f"n{i}" for i in range(20)]}])
    )
    ds = TrainDataset(many, group_size=4, seed=1)
    first = [ds[0] for _ in range(2)]
    ds.set_epoch(1)
    assert first[0] == first[1] and ds[0] != first[0]  # same epoch same group, next epoch a new draw
    assert len(set(ds[0][1][1:])) == 3  # enough negatives: no repeats


def test_no_negatives_falls_back_to_in_batch_with_one_warning(tmp_path, caplog):
    rows = [{"query": r["query"], "pos": r["pos"], "neg": []} for r in ROWS]
    examples = read_train_file(write_rows(tmp_path / "t.jsonl", rows))
    with caplog.at_level(logging.WARNING):
        ds = TrainDataset(examples, group_size=8)
    assert ds.group_size == 1 and all(len(ds[i][1]) == 1 for i in range(len(ds)))
    assert len([r for r in caplog.records if "in-batch negatives only" in r.message]) == 1


def test_finetune_cli_end_to_end(tiny_model_dir, tmp_path):
    """LoRA run with GradCache; the output loads as a retriever and its embeddings have moved."""
    from llara.inference.encoder import LlaraEncoder

    train = write_rows(tmp_path / "t.jsonl", ROWS)
    out = tmp_path / "ft"
    args = ["finetune", "--model", tiny_model_dir, "--train", train, "--output", out, "--train-batch-size", "3"]
    args += ["--group-size", "2", "--max-steps", "3", "--lr", "1e-2", "--precision", "fp32", "--save-every", "2"]
    lengths = ["--query-max-length", "36", "--passage-max-length", "40"]
    result = run_cli(*args, "--grad-cache", "--grad-cache-chunk", "2", *lengths)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fine-tuned 3 steps on 6 rows" in result.stderr.replace("\n", " ")
    config = json.loads((out / "llara.json").read_text())
    assert config["recipe"] == "reference" and config["training"][-1]["grad_cache"] is True
    assert config["training"][-1]["stage"] == "finetune" and config["llara_version"]
    # trained shorter than the encoding defaults: it still reads whole texts at those
    assert (config["query_max_length"], config["passage_max_length"]) == (QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH)
    assert (config["training"][-1]["query_max_length"], config["training"][-1]["passage_max_length"]) == (36, 40)
    assert (tmp_path / "ft-checkpoints" / "checkpoint-2").is_dir()
    texts = ["dense passage retrieval", "library data"]
    tuned = LlaraEncoder.from_pretrained(out, precision="fp32").encode(texts)
    base = LlaraEncoder.from_pretrained(tiny_model_dir, precision="fp32")
    assert tuned.shape == (2, base.dim) and np.allclose(np.linalg.norm(tuned, axis=1), 1, atol=1e-5)
    import torch

    torch.manual_seed(0)  # the base model's special-token rows are drawn at random on load
    assert not np.allclose(tuned, base.encode(texts), atol=1e-3)
    # a second run into the same folder refuses, unless resumed
    again = run_cli(*args)
    assert again.returncode == 2 and "--resume" in again.stderr


def test_finetune_cli_bad_input_writes_nothing(tiny_model_dir, tmp_path):
    bad = write_rows(tmp_path / "bad.jsonl", [ROWS[0], '{"query": "x"\n'])
    out = tmp_path / "ft"
    result = run_cli("finetune", "--model", tiny_model_dir, "--train", bad, "--output", out, "--max-steps", "1")
    assert result.returncode == 2
    assert "bad.jsonl:2" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "ft-checkpoints").exists()


@pytest.mark.slow
def test_trained_lengths_travel_with_the_model(tiny_model_dir, tmp_path):
    """A model fine-tuned at query 280 / passage 300 tokens (longer than the 256/256 defaults) is evaluated,
    encoded and exported at 280 / 300, unless a flag says otherwise."""
    from tests.conftest import write_beir

    out = tmp_path / "ft"
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    args = ["finetune", "--model", tiny_model_dir, "--train", train, "--output", out, "--max-steps", "1"]
    result = run_cli(*args, "--group-size", "2", "--precision", "fp32", "--query-max-length", "280",
                     "--passage-max-length", "300")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    docs = [{"_id": f"d{i}", "title": "", "text": r["pos"][0]} for i, r in enumerate(ROWS)]
    queries = [{"_id": f"q{i}", "text": r["query"]} for i, r in enumerate(ROWS)]
    data = write_beir(tmp_path / "beir", docs, queries, [(f"q{i}", f"d{i}", 1) for i in range(len(ROWS))])

    def evaluated_lengths(*flags):
        ev = tmp_path / f"ev{len(flags)}"
        r = run_cli("evaluate", "--model", out, "--data", data, "--output", ev, "--precision", "fp32", *flags)
        assert r.returncode == 0, r.stderr[-2000:]
        info = json.loads((ev / "metrics.json").read_text())["info"]
        return info["query_max_length"], info["passage_max_length"]

    assert evaluated_lengths() == (280, 300)
    assert evaluated_lengths("--query-max-length", "50") == (50, 300)  # a flag overrides the saved value
    emb = tmp_path / "emb"
    r = run_cli("encode", "--model", out, "--corpus", data / "corpus.jsonl", "--output", emb, "--precision", "fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads(next(emb.glob("*manifest*.json")).read_text())
    assert (manifest["query_max_length"], manifest["passage_max_length"]) == (280, 300)
    r = run_cli("export", "--model", out, "--output", tmp_path / "exported")
    assert r.returncode == 0, r.stderr[-2000:]
    exported = json.loads((tmp_path / "exported" / "llara.json").read_text())
    assert (exported["query_max_length"], exported["passage_max_length"]) == (280, 300)
    assert [s["stage"] for s in exported["training"]] == ["finetune"]


def test_defaults_follow_the_device_profile(tmp_path):
    """Unset settings take the device's profile; a given flag wins; --full takes the full-weights rate."""
    from llara.training.finetune.options import FULL_LR, PROFILES, FinetuneOptions

    cpu = FinetuneOptions(output=tmp_path / "a").resolve("cpu")
    assert cpu.profile == "cpu" and cpu.contrastive()["profile"] == "cpu"
    assert {k: getattr(cpu, k) for k in PROFILES["cpu"]} == PROFILES["cpu"]
    gpu = FinetuneOptions(output=tmp_path / "b", group_size=4).resolve("cuda:1")
    assert gpu.profile == "gpu" and gpu.group_size == 4 and gpu.lr == PROFILES["gpu"]["lr"]
    assert gpu.passage_max_length == PROFILES["gpu"]["passage_max_length"]
    assert FinetuneOptions(output=tmp_path / "c", full=True).resolve("cpu").lr == FULL_LR
    assert PROFILES["cpu"]["group_size"] < PROFILES["gpu"]["group_size"]
    with pytest.raises(ValueError):
        FinetuneOptions(output=tmp_path / "d").validate()  # unresolved


def test_cli_records_the_profile_it_trained_with(tiny_model_dir, tmp_path):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    out = tmp_path / "ft"
    args = ["finetune", "--model", tiny_model_dir, "--train", train, "--output", out, "--train-batch-size", "2"]
    result = run_cli(*args, "--max-steps", "1", "--precision", "fp32", "--passage-max-length", "48")
    assert result.returncode == 0, result.stderr[-2000:]
    from llara.modeling.loading import device_of_rank
    from llara.training.finetune.options import PROFILES, profile_for

    profile = profile_for(device_of_rank())  # "cpu" here; "gpu" where a GPU trains
    config = json.loads((out / "llara.json").read_text())
    stage = config["training"][-1]
    assert stage["profile"] == profile and stage["group_size"] == PROFILES[profile]["group_size"]
    query = PROFILES[profile]["query_max_length"]
    assert (stage["query_max_length"], stage["passage_max_length"]) == (query, 48)
    # the encoding lengths never shrink to the training ones (the base model encodes at the defaults)
    encoding = (config["query_max_length"], config["passage_max_length"])
    assert encoding == (max(QUERY_MAX_LENGTH, query), PASSAGE_MAX_LENGTH)


@pytest.mark.slow
def test_epochs_stop_a_timed_run(tiny_model_dir, tmp_path):
    """--epochs ends a --max-time run after that many passes over the rows; --max-steps, when fewer, wins."""
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    common = ["--train", train, "--train-batch-size", "2", "--precision", "fp32", "--model", tiny_model_dir]
    result = run_cli("finetune", *common, "--output", tmp_path / "a", "--max-time", "10", "--epochs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fine-tuned 3 steps on 6 rows" in result.stderr.replace("\n", " ")  # 6 rows, 2 a step
    stage = json.loads((tmp_path / "a" / "llara.json").read_text())["training"][-1]
    assert stage["epochs"] == 1 and stage["plan"]["epochs"] == "1 (3 steps at most)"
    fewer = run_cli("finetune", *common, "--output", tmp_path / "b", "--max-steps", "2", "--epochs", "2")
    assert fewer.returncode == 0, fewer.stderr[-2000:]
    assert "fine-tuned 2 steps on 6 rows" in fewer.stderr.replace("\n", " ")
    bad = run_cli("finetune", *common, "--output", tmp_path / "c", "--max-time", "1", "--epochs", "0")
    assert bad.returncode == 2 and "--epochs must be positive" in bad.stderr
    # NaN passed the old `<= 0` checks; it is refused like any other non-positive number. In-process: the
    # refusal comes before anything loads (the `bad` run above shows it leaves as exit 2), and a process each
    # would cost seconds of imports.
    from typer.testing import CliRunner

    from llara.cli import app

    for flag in ("--lr", "--max-time", "--temperature", "--epochs"):
        argv = ["finetune", *map(str, common), "--output", str(tmp_path / "d"), "--max-time", "1", flag, "nan"]
        nan = CliRunner().invoke(app, argv)
        assert isinstance(nan.exception, LlaraError), (flag, nan.output[-500:])
        assert f"{flag} must be positive, got nan" in str(nan.exception)
        assert not (tmp_path / "d").exists()
