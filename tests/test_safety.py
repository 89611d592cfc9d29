"""Loading a model folder never runs code from it: no unpickling, no remote code without the flag."""

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest

from llara.errors import LlaraError
from llara.modeling.loading import load_model

SRC = Path(__file__).resolve().parents[1] / "src"


class Exploit:
    """Unpickling this creates the sentinel file: proof that a pickle was executed."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def plant_pickle(path: Path, sentinel: Path) -> None:
    path.write_bytes(pickle.dumps({"model.embed_tokens.weight": Exploit(sentinel)}))


def copy_without_weights(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    return dst


def test_pickle_only_folder_is_refused_unopened(tiny_model_dir, tmp_path):
    folder = copy_without_weights(tiny_model_dir, tmp_path / "m")
    sentinel = tmp_path / "PWNED"
    plant_pickle(folder / "pytorch_model.bin", sentinel)
    with pytest.raises(LlaraError, match="no .safetensors weights"):
        load_model(folder)
    assert not sentinel.exists()


def test_pickle_beside_safetensors_is_ignored(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    sentinel = tmp_path / "PWNED"
    plant_pickle(folder / "pytorch_model.bin", sentinel)
    plant_pickle(folder / "training_args.bin", sentinel)
    model, _ = load_model(folder)
    assert model.config.num_hidden_layers == 2 and not sentinel.exists()


def test_lora_adapter_without_safetensors_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    sentinel = tmp_path / "PWNED"
    plant_pickle(folder / "adapter_model.bin", sentinel)
    with pytest.raises(LlaraError, match="no adapter_model.safetensors"):
        load_model(folder)
    assert not sentinel.exists()


def plant_remote_code(folder: Path, sentinel: Path, model_type: str) -> None:
    """An auto_map pointing at .py files that announce their import by creating the sentinel."""
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")


def test_custom_code_is_not_run_without_the_flag(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    sentinel = tmp_path / "PWNED"
    plant_remote_code(folder, sentinel, "evilnet")
    with pytest.raises(LlaraError, match=r"config.json: field 'auto_map': .*--trust-remote-code"):
        load_model(folder)
    assert not sentinel.exists()


def test_custom_tokenizer_code_is_not_run_without_the_flag(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    sentinel = tmp_path / "PWNED"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    with pytest.raises(LlaraError, match=r"tokenizer_config.json: field 'auto_map'"):
        load_model(folder)
    assert not sentinel.exists()


def test_builtin_architecture_ignores_auto_map(tiny_model_dir, tmp_path):
    """transformers has llama built in, so without the flag it must load its own class, not evil.py."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    sentinel = tmp_path / "PWNED"
    plant_remote_code(folder, sentinel, "llama")
    model, _ = load_model(folder)
    assert type(model).__name__ == "LlamaForCausalLM" and not sentinel.exists()


def test_cli_refuses_custom_code(tiny_model_dir, tmp_path, arxiv_subset):
    from tests.conftest import run_cli

    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    sentinel = tmp_path / "PWNED"
    plant_remote_code(folder, sentinel, "evilnet")
    res = run_cli("evaluate", "--model", folder, "--data", arxiv_subset, "--output", tmp_path / "out")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--trust-remote-code" in res.stderr
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can unpickle: np.load without allow_pickle=False, torch.load without weights_only=True,
    and pickle/joblib loading at all."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        kwargs = {k.arg: k.value for k in node.keywords}

        def is_const(name, value, kwargs=kwargs):
            return isinstance(kwargs.get(name), ast.Constant) and kwargs[name].value is value

        name = node.func.attr
        if owner in ("np", "numpy") and name == "load" and not is_const("allow_pickle", False):
            found.append(f"line {node.lineno}: np.load without allow_pickle=False")
        if owner == "torch" and name == "load" and not is_const("weights_only", True):
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        if owner in ("pickle", "joblib", "dill", "cloudpickle") and name in ("load", "loads"):
            found.append(f"line {node.lineno}: {owner}.{name}")
    return found


def test_no_source_file_unpickles():
    """The library and the benchmarks (tests may torch.load what they wrote themselves)."""
    problems = []
    for path in sorted([*(SRC / "llara").rglob("*.py"), *(SRC.parent / "benchmarks").rglob("*.py")]):
        problems += [f"{path.relative_to(SRC.parent)}: {p}" for p in unsafe_loads(ast.parse(path.read_text()))]
    assert problems == []


def test_the_unpickling_scan_finds_what_it_should():
    code = (
        "np.load(f)\nnp.load(f, allow_pickle=False)\ntorch.load(f)\npickle.loads(b)\nnumpy.load(f, allow_pickle=True)"
    )
    assert [p.split(": ")[0] for p in unsafe_loads(ast.parse(code))] == ["line 1", "line 3", "line 4", "line 5"]
