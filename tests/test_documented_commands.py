"""Documented means run: every command line of docs/recipes-7b.md and every training command of the
guides without and with labels (docs/guide-no-labels.md, docs/guide-labels.md) runs here with its own
flags, on a tiny random model of the same family, with only the model, the data, sizes and step counts
swapped.

The 7B page runs in a folder laid out as it assumes (models/Llama-2-7b-hf, data/wikipedia,
data/msmarco, data/beir/scifact, configs/), so its paths stay as written; `torchrun --nproc_per_node 8`
becomes 2 CPU processes (gloo), and its training commands also run in one process, on tiny LLaMA and
Mistral models, DeepSpeed configs included.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llara.testing import make_tiny_model
from tests.conftest import failure, require_deepspeed, write_arxiv_tagged
from tests.test_docs import code_blocks

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "docs" / "recipes-7b.md"
GUIDES = ROOT / "docs"
# The only values swapped: sizes and step counts fit for a 2-layer model on 2 CPU cores.
SIZES = {
    "--chunk-tokens": "128",
    "--batch-size": "2",
    "--train-batch-size": "2",
    "--grad-accum": "2",
    "--max-steps": "2",
    "--save-every": "1",
    "--max-tokens-per-batch": "4096",
    "--max-time": "0.05",
}
PORTS = iter(range(29571, 29640))


def documented(path: Path) -> list[tuple[list[str], list[str]]]:
    """(launcher, argv after `llara`) of each `llara` line in the page's bash blocks, in order."""
    found = []
    for block in code_blocks(path, "bash"):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            line = line.split(" #")[0].strip()
            words = shlex.split(line) if line and not line.startswith("#") else []
            if "llara" not in words or words[0] == "pip":
                continue
            at = words.index("llara")
            launcher = words[: at - 1] if at and words[at - 1] == "-m" else words[:at]
            argv = []
            for word in words[at + 1 :]:
                if word in ("&&", "||", "|", ";"):
                    break
                argv.append(word)
            found.append((launcher, argv))
    return found


def scaled(argv: list[str]) -> list[str]:
    return [SIZES.get(argv[i - 1], w) if i and argv[i - 1] in SIZES else w for i, w in enumerate(argv)]


def run(launcher: list[str], argv: list[str], cwd: Path, processes: int | None = None) -> subprocess.CompletedProcess:
    if launcher and launcher[0] == "torchrun":
        prefix = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes or 2}"]
        prefix.append(f"--master_port={next(PORTS)}")
    else:
        assert not launcher, launcher
        prefix = [sys.executable]
    if processes == 1:
        prefix = [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*prefix, "-m", "llara", *scaled(argv)], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=600)  # fmt: skip
    assert res.returncode == 0, f"llara {' '.join(argv)}\n{failure(res.stderr)}"
    assert "Traceback" not in res.stderr
    return res


def lay_out(folder: Path, family: str) -> Path:
    """The folders the 7B page names, filled with a tiny model of `family` and real arXiv text."""
    folder.mkdir(parents=True)
    make_tiny_model(folder / "models" / "Llama-2-7b-hf", arch=family)
    (folder / "configs").symlink_to(ROOT / "configs")
    msmarco = write_arxiv_tagged(folder / "data" / "msmarco", n_queries=10, n_others=30)
    for split in ("train", "dev"):
        shutil.copy(msmarco / "qrels" / "test.tsv", msmarco / "qrels" / f"{split}.tsv")
    (folder / "data" / "wikipedia").mkdir()
    shutil.copy(msmarco / "corpus.jsonl", folder / "data" / "wikipedia" / "corpus.jsonl")
    shutil.copytree(msmarco, folder / "data" / "beir" / "scifact")
    return folder


def test_the_7b_page_is_what_this_test_runs():
    commands = [argv[0] for _, argv in documented(RECIPE)]
    assert commands == ["pretrain", "explain", "mine", "finetune", "encode", "index", "search", "evaluate", "export"]
    training = [(launcher, argv) for launcher, argv in documented(RECIPE) if argv[0] in ("pretrain", "finetune")]
    assert all(launcher[0] == "torchrun" and "--deepspeed" in argv for launcher, argv in training)
    assert all("--gradient-checkpointing" in argv for _, argv in training)


@pytest.mark.slow
def test_the_7b_page_end_to_end_on_tiny_llama(tmp_path):
    """Every command of the page, in order, as written (torchrun with 2 processes), then its Python
    evaluation block."""
    require_deepspeed()
    folder = lay_out(tmp_path / "llama", "llama")
    said = {argv[0]: run(launcher, argv, folder).stderr for launcher, argv in documented(RECIPE)}
    assert said["finetune"].count("fine-tuned 2 steps") == 1  # one line for the run, not one per rank
    assert (folder / "runs" / "llara-7b-ft" / "llara.json").is_file()
    assert (folder / "runs" / "msmarco-dev.trec").stat().st_size > 0
    assert (folder / "runs" / "scifact" / "metrics.json").is_file()
    assert (folder / "export" / "llara-7b-st" / "modules.json").is_file()
    (python,) = [b for b in code_blocks(RECIPE, "bash") if "python - <<'EOF'" in b]
    source = python.split("<<'EOF'\n", 1)[1].rsplit("EOF", 1)[0]
    res = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=folder, timeout=300)
    assert res.returncode == 0 and "RR@10" in res.stdout, res.stderr[-3000:]


@pytest.mark.parametrize(
    "family, processes",
    [  # LLaMA under torchrun is the end-to-end test's; the one-process runs are DeepSpeed without a launcher
        pytest.param("llama", 1, id="llama-one-process", marks=pytest.mark.slow),
        pytest.param("mistral", 1, id="mistral-one-process", marks=pytest.mark.slow),
        pytest.param("mistral", 2, id="mistral-torchrun-2"),
    ],
)
def test_the_7b_training_commands(tmp_path, family, processes):
    """Both training commands (ZeRO-3 full pretraining, ZeRO-1 LoRA fine-tuning with negatives across
    devices, bf16, gradient checkpointing) chained as the page chains them."""
    require_deepspeed()
    folder = lay_out(tmp_path / family, family)
    by_name = {argv[0]: (launcher, argv) for launcher, argv in documented(RECIPE)}
    run(*by_name["pretrain"], folder, processes)
    run(*by_name["mine"], folder)
    res = run(*by_name["finetune"], folder, processes)
    assert res.stderr.count("fine-tuned 2 steps") == 1  # one line for the run, not one per rank
    assert (folder / "runs" / "llara-7b-ft" / "model.safetensors").is_file()


@pytest.mark.slow
def test_the_guides_training_commands(tmp_path, tiny_model_dir):
    """The no-label guide's path (pretrain, pairs, finetune on the pairs) and the labelled guide's
    (mine, finetune on the mined rows), in one folder, with the built-in model swapped for a tiny
    LLaMA and minutes for a few seconds."""
    folder = tmp_path / "guides"
    data = write_arxiv_tagged(folder / "DIR", n_queries=10, n_others=30)
    shutil.copy(data / "qrels" / "test.tsv", data / "qrels" / "train.tsv")
    shutil.copy(data / "corpus.jsonl", folder / "corpus.jsonl")
    lines = [*documented(GUIDES / "guide-no-labels.md"), *documented(GUIDES / "guide-labels.md")]
    training = [argv for _, argv in lines if argv[0] in ("pretrain", "pairs", "mine", "finetune")]
    assert [argv[0] for argv in training] == ["pretrain", "pairs", "finetune", "mine", "finetune"]
    for argv in training:
        argv = [str(tiny_model_dir) if w == "smollm2" else w for w in argv]
        run([], argv, folder)
    for model in ("adapted", "ft", "ft-labels"):
        assert (folder / model / "llara.json").is_file(), model
