"""`llara pretrain` end to end on a tiny model: output folder, checkpoints, resume, time limit, bad input."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from llara.errors import LlaraError
from llara.inference.encoder import LlaraEncoder
from llara.modeling.loading import load_model
from llara.modeling.recipes import load_recipe
from llara.training.common import SPECIAL_PARAM, param_groups, prepare_model
from llara.training.pretrain.options import PretrainOptions
from llara.training.pretrain.trainer import run_pretrain
from tests.conftest import run_cli

TEXT = (
    "The library is a system of information. The index is a model of data. Is the query a text? "
    "The search user reads the document.\n\nA dense passage retrieval model embeds text. Information science "
    "is old. The language model predicts the next token. A vector index answers a query.\n"
)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 3)
    return path


def opts(tmp_path, name="out", **kw):
    base = dict(max_steps=4, train_batch_size=2, save_every=2, precision="fp32", logging_steps=1)
    return PretrainOptions(output=tmp_path / name, **{**base, **kw})


def test_cli_pretrain_writes_a_loadable_model(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "out"
    res = run_cli(
        "pretrain", "--model", tiny_model_dir, "--corpus", corpus, "--output", out, "--max-steps", "4",
        "--batch-size", "2", "--save-every", "2", "--chunk-tokens", "72", "--precision", "fp32",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "'ebae'" in res.stderr + res.stdout and "'ebar'" in res.stderr + res.stdout  # per-task losses logged
    assert json.loads((out / "llara.json").read_text())["recipe"] == "reference"
    assert sorted(p.name for p in (tmp_path / "out-checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    weights = load_file(out / "model.safetensors")
    assert not any("lora" in k for k in weights)  # LoRA merged into a plain HF folder
    base = load_file(tiny_model_dir / "model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(weights[key], base[key])  # the merged LoRA update is there
    encoder = LlaraEncoder.from_pretrained(out)
    assert encoder.recipe.name == "reference" and "<s16>" in encoder.tokenizer.get_vocab()
    assert encoder.model.get_input_embeddings().num_embeddings == len(encoder.tokenizer)
    # A checkpoint loads too (the curve of quality vs training time evaluates them) and equals the final model.
    ckpt = LlaraEncoder.from_pretrained(tmp_path / "out-checkpoints" / "checkpoint-4")
    texts = ["the library index", "a query"]
    assert abs(ckpt.encode(texts) - encoder.encode(texts)).max() < 1e-4


def test_special_tokens_get_their_own_learning_rate(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(tiny_model_dir)
    model = prepare_model(model, tokenizer, load_recipe("reference"), opts(tmp_path))
    groups = param_groups(model, lr=1e-4, special_lr=1e-2, weight_decay=0.0)
    special = [g for g in groups if g["lr"] == 1e-2]
    names = {id(p): n for n, p in model.named_parameters()}
    assert len(special) == 1 and all(SPECIAL_PARAM in names[id(p)] for p in special[0]["params"])
    assert sum(p.numel() for p in special[0]["params"]) == 16 * model.config.hidden_size


def test_resume_continues_a_killed_run_exactly(tiny_model_dir, corpus, tmp_path):
    full = run_pretrain(str(tiny_model_dir), corpus, opts(tmp_path, "a"))
    killed = opts(tmp_path, "b")
    run_pretrain(str(tiny_model_dir), corpus, killed)
    shutil.rmtree(killed.output)  # as if killed after the step-2 checkpoint
    shutil.rmtree(killed.checkpoint_dir / "checkpoint-4")
    with pytest.raises(LlaraError, match="--resume"):
        run_pretrain(str(tiny_model_dir), corpus, opts(tmp_path, "b"))
    resumed = run_pretrain(str(tiny_model_dir), corpus, opts(tmp_path, "b", resume=True))
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_max_time_stops_and_saves(tiny_model_dir, corpus, tmp_path):
    o = opts(tmp_path, max_steps=None, max_time=1e-6, recipe="paper")  # minutes: over after the first step
    out = run_pretrain(str(tiny_model_dir), corpus, o)
    assert json.loads((out / "llara.json").read_text())["recipe"] == "paper"
    assert [p.name for p in o.checkpoint_dir.iterdir()] == ["checkpoint-1"]


def test_max_time_decays_the_rate_by_the_clock_and_resume_keeps_the_clock(tiny_model_dir, corpus, tmp_path):
    """--max-time alone with pretraining's --lr-decay: the rate at step s is the held schedule's (warm-up
    over 10 steps, then --lr) times the share of the time budget left, so it falls with the clock towards
    0 at the limit. A checkpoint records the minutes trained, and a resumed run counts from them: resumed
    at the limit, it stops after one step instead of training another full budget."""

    def rates(o):  # (step, rate / the held schedule's rate) of the run's only checkpoint
        (ckpt,) = o.checkpoint_dir.iterdir()
        state = json.loads((ckpt / "trainer_state.json").read_text())
        logs = [h for h in state["log_history"] if "learning_rate" in h and h["step"] > 1]
        # the rate logged at step s is the one step s ran at: the schedule's value after s - 1 steps
        return ckpt, state, [h["learning_rate"] / (o.lr * min(1.0, (h["step"] - 1) / 10)) for h in logs]

    o = opts(tmp_path, max_steps=None, max_time=0.1, save_every=10**6)  # 6 s
    run_pretrain(str(tiny_model_dir), corpus, o)
    ckpt, state, shares = rates(o)
    assert len(shares) >= 2 and shares == sorted(shares, reverse=True) and shares[-1] < 0.5
    assert json.loads((ckpt / "llara-time.json").read_text())["minutes"] >= 0.1
    held = opts(tmp_path, "held", max_steps=None, max_time=0.05, save_every=10**6, lr_decay=False)
    run_pretrain(str(tiny_model_dir), corpus, held)
    assert set(rates(held)[2]) == {1.0}  # --no-lr-decay: warm up, then hold to the end

    shutil.rmtree(o.output)  # as if killed after its last checkpoint, with the budget spent
    run_pretrain(str(tiny_model_dir), corpus, opts(tmp_path, max_steps=None, max_time=0.1, resume=True))
    steps = sorted(int(p.name.split("-")[1]) for p in o.checkpoint_dir.iterdir())
    assert steps[-1] == state["global_step"] + 1 and (o.output / "llara.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--chunk-tokens", "10"], "--chunk-tokens 10 is smaller than the reference prompt"),
        (["--corpus-empty"], "empty corpus"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tiny_model_dir, corpus, tmp_path, args, message):
    if args == ["--corpus-empty"]:
        corpus.write_text("\n\n")
        args = []
    out = tmp_path / "out"
    res = run_cli("pretrain", "--model", tiny_model_dir, "--corpus", corpus, "--output", out, "--max-steps", "2", *args)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert not out.exists() and not (tmp_path / "out-checkpoints").exists()


def test_pretrain_smollm2_few_steps(smollm2_dir, corpus, tmp_path):
    out = run_pretrain(str(smollm2_dir), corpus, opts(tmp_path, max_steps=2, save_every=100, chunk_tokens=64))
    encoder = LlaraEncoder.from_pretrained(out)
    emb = encoder.encode(["what is an index?"], side="query")
    assert emb.shape == (1, 576) and abs((emb**2).sum() - 1) < 1e-4


def test_torchrun_two_processes_pretrain_checkpoint_and_resume(tiny_model_dir, corpus, tmp_path):
    """DDP over gloo: both ranks write into a checkpoint's staging folder, rank 0 renames it into
    place; a run cut after its first checkpoint resumes under torchrun to the uninterrupted result."""
    import subprocess
    import sys

    def torchrun(out, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "llara", "pretrain", "--model", str(tiny_model_dir), "--corpus", str(corpus),
               "--output", str(out), "--max-steps", "4", "--save-every", "2", "--batch-size", "2",
               "--chunk-tokens", "72", "--precision", "fp32", *extra]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    torchrun(tmp_path / "a")
    ckpts = tmp_path / "a-checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-2", "checkpoint-4"]  # no staging debris
    assert json.loads((ckpts / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert LlaraEncoder.from_pretrained(tmp_path / "a").encode(["a query"]).shape[0] == 1

    torchrun(tmp_path / "b")
    shutil.rmtree(tmp_path / "b")  # as if killed after the step-2 checkpoint
    shutil.rmtree(tmp_path / "b-checkpoints" / "checkpoint-4")
    res = torchrun(tmp_path / "b", "--resume")
    assert "checkpoint-2" in res.stderr
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


@pytest.mark.slow
def test_torchrun_ranks_share_one_clock_under_max_time(tiny_model_dir, corpus, tmp_path):
    """Two gloo ranks bounded by --max-time alone: they take the slowest rank's clock, so both stop at
    the same step (one rank stopping first would leave the other waiting in its gradient all-reduce) and
    decay the learning rate alike."""
    import subprocess
    import sys

    out = tmp_path / "t"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
           "-m", "llara", "pretrain", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--output", str(out),
           "--max-time", "0.15", "--batch-size", "2", "--chunk-tokens", "72", "--precision", "fp32",
           "--logging-steps", "1", "--save-every", "100000"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (ckpt,) = (tmp_path / "t-checkpoints").iterdir()
    log = json.loads((ckpt / "trainer_state.json").read_text())["log_history"]
    rates = [h["learning_rate"] for h in log if "learning_rate" in h]
    assert rates[-1] < max(rates) and (out / "llara.json").is_file()


def test_a_save_killed_half_way_leaves_no_checkpoint_and_is_cleared(tiny_model_dir, corpus, tmp_path):
    o = opts(tmp_path, "out", max_steps=2)
    debris = o.checkpoint_dir / ".staging" / "checkpoint-7"  # a time-based save at another step, killed
    debris.mkdir(parents=True)
    (debris / "optimizer.pt").write_bytes(b"half")
    run_pretrain(str(tiny_model_dir), corpus, o)
    assert sorted(p.name for p in o.checkpoint_dir.iterdir()) == ["checkpoint-2"]
