"""A normal run prints llara's own lines only: its plan and progress, warnings about the user's data,
results. Each command runs here as a user runs it (a process of its own, a tiny model, real text), and
any stderr line of a shape llara does not print fails the test: a dependency's log line or warning,
a traceback, a deprecation notice."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import run_cli

# What llara writes to stderr: its log lines, its console lines, progress bars, rich tables and rules.
OURS = [
    r"(INFO|WARNING) llara(\.[\w.]+)?: ",  # llara's loggers (the plan, training progress)
    r"warning: ",  # llara's warnings about the user's data
    r"(wrote|shard|fine-tuned|fusion:|truncated|encoding|search:|with judgements:|llara) ",
    r"\{'(loss|train_runtime|contrastive|ebae|ebar|epoch|grad_norm|learning_rate)",  # the Trainer's loss logs
    r".*\d+%\|",  # tqdm progress bars
    r".*(it/s|s/it)\]",
    r"\s*[─━│┃┏┓┗┛┡┩└┘┌┐├┤╭╮╰╯═║╔╗╚╝┳┻╇╈┼]",  # tables and rules
    r"\s*",
]
ALLOWED = re.compile("|".join(f"(?:{p}.*)" for p in OURS[:-1]) + f"|(?:{OURS[-1]})")


def unexpected(stderr: str) -> list[str]:
    lines = [part for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if not ALLOWED.fullmatch(line)]


def quiet(*argv) -> str:
    res = run_cli(*argv)
    assert res.returncode == 0, res.stderr[-3000:]
    noise = unexpected(res.stderr)
    assert not noise, f"`llara {argv[0]}` printed lines that are not llara's:\n" + "\n".join(noise[:20])
    return res.stderr


def test_the_checker_sees_noise():
    assert unexpected("DEBUG bm25s: Building index from IDs objects\n")
    assert unexpected("/x/site-packages/transformers/foo.py:12: FutureWarning: something\n")
    assert unexpected("The new embeddings will be initialized from a multivariate normal distribution\n")
    assert unexpected("Traceback (most recent call last):\n")
    assert not unexpected("wrote out/run.trec\nINFO llara.training.common: fine-tuning plan: device cpu\n")


@pytest.mark.slow
def test_every_command_runs_quietly(tiny_model_dir, arxiv_subset, tmp_path):
    data, corpus, model = arxiv_subset, arxiv_subset / "corpus.jsonl", tiny_model_dir
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")  # mine reads a training split
    sizes = ["--max-steps", "2", "--train-batch-size", "2", "--precision", "fp32"]
    quiet("pairs", "--corpus", corpus, "--output", tmp_path / "pairs.jsonl", "--negatives", "2")
    quiet("mine", "--data", data, "--output", tmp_path / "mined.jsonl", "--negatives", "2")
    quiet("pretrain", "--model", model, "--corpus", corpus, "--output", tmp_path / "pt", "--chunk-tokens", "96", *sizes)
    train = ["--model", tmp_path / "pt", "--train", tmp_path / "pairs.jsonl", "--output", tmp_path / "ft"]
    said = quiet("finetune", *train, "--passage-max-length", "64", "--gradient-checkpointing", *sizes)
    # one plan, resolved before the first step, printed and saved with the stage in llara.json
    plan = json.loads((tmp_path / "ft" / "llara.json").read_text())["training"][-1]["plan"]
    assert plan["device"] == "cpu" and plan["precision"] == "fp32" and plan["profile"] == "cpu"
    assert plan["gradient_checkpointing"] is True and plan["lengths"] == "32/64" and plan["train_batch_size"] == 2
    assert "fine-tuning plan: device cpu" in said
    pretrained = json.loads((tmp_path / "pt" / "llara.json").read_text())["training"][-1]
    assert pretrained["plan"]["chunk_tokens"] == 96 and pretrained["plan"]["precision"] == "fp32"
    ft = ["--model", tmp_path / "ft", "--precision", "fp32"]
    quiet("encode", *ft, "--corpus", corpus, "--output", tmp_path / "emb")
    quiet("index", "--embeddings", tmp_path / "emb", "--output", tmp_path / "index")
    search = ["search", *ft, "--index", tmp_path / "index", "--queries", data / "queries.jsonl"]
    quiet(*search, "--output", tmp_path / "dense.trec")
    quiet(*search, "--output", tmp_path / "hybrid.trec", "--method", "hybrid", "--corpus", corpus)
    quiet("search", "--method", "bm25", "--corpus", corpus, "--queries", data / "queries.jsonl", "--output",
          tmp_path / "bm25.trec")  # fmt: skip
    quiet("evaluate", *ft, "--data", data, "--output", tmp_path / "ev", "--method", "hybrid", "--top-k", "100")
    quiet("compare", tmp_path / "bm25.trec", tmp_path / "hybrid.trec", "--qrels", data / "qrels" / "test.tsv")
    quiet("explain", *ft[:2], "a short text about neural retrieval")
    quiet("export", *ft[:2], "--output", tmp_path / "exported")
