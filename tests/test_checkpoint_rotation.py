"""At scale a run writes many checkpoints: only the newest --keep-checkpoints stay, a new one must be
whole on disk before it takes its name or an older one goes, and --save-at-minutes ones always stay."""

import pytest

from llara.errors import LlaraError
from llara.training.common import verify_checkpoint
from llara.training.pretrain.trainer import run_pretrain
from tests.test_pretrain_train import TEXT, opts


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT * 3)
    return path


def test_only_the_newest_checkpoints_stay(tiny_model_dir, corpus, tmp_path):
    o = opts(tmp_path, "out", max_steps=6, save_every=2, keep_checkpoints=1)
    run_pretrain(str(tiny_model_dir), corpus, o)
    assert [p.name for p in o.checkpoint_dir.iterdir()] == ["checkpoint-6"]
    everything = opts(tmp_path, "all", max_steps=6, save_every=2, keep_checkpoints=0)
    run_pretrain(str(tiny_model_dir), corpus, everything)
    kept = sorted(p.name for p in everything.checkpoint_dir.iterdir())
    assert kept == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


def test_save_at_minutes_checkpoints_are_never_rotated_out(tiny_model_dir, corpus, tmp_path):
    o = opts(tmp_path, "out", max_steps=6, save_every=2, keep_checkpoints=1, save_at_minutes=[1e-6])
    run_pretrain(str(tiny_model_dir), corpus, o)
    assert sorted(p.name for p in o.checkpoint_dir.iterdir()) == ["checkpoint-1", "checkpoint-6"]


def test_a_checkpoint_cut_short_is_refused(tiny_model_dir, corpus, tmp_path):
    o = opts(tmp_path, "out", max_steps=2, save_every=2)
    run_pretrain(str(tiny_model_dir), corpus, o)
    ckpt = o.checkpoint_dir / "checkpoint-2"
    verify_checkpoint(ckpt)  # whole
    (weights,) = ckpt.glob("*.safetensors")
    data = weights.read_bytes()
    weights.write_bytes(data[:-100])
    with pytest.raises(LlaraError, match="cut short"):
        verify_checkpoint(ckpt)
    weights.write_bytes(data[:4])
    with pytest.raises(LlaraError, match="unreadable|cut short"):
        verify_checkpoint(ckpt)
    weights.unlink()
    with pytest.raises(LlaraError, match="no weights"):
        verify_checkpoint(ckpt)
