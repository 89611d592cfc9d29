"""Options are declared once: every command is generated from its job's dataclass, a flag means one
thing across commands, old spellings still work (with a warning) for one release, choices are checked
before anything loads, and a run's settings are frozen."""

from __future__ import annotations

import ast
import dataclasses
import enum
import shutil
import types
import typing
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from llara.cli import COMMANDS, RENAMED, app
from llara.cli.options import DEPRECATED, command, option_fields
from llara.settings import MEANINGS, flag_of, option, spec_of
from llara.training.finetune.options import FinetuneOptions
from tests.conftest import run_cli, write_beir

CLI = Path(__file__).resolve().parents[1] / "src" / "llara" / "cli"
GROUP = typer.main.get_command(app)


def visible(cmd: click.Command) -> list[click.Parameter]:
    return [p for p in cmd.params if not getattr(p, "hidden", False)]


@pytest.mark.parametrize("generated", COMMANDS, ids=lambda c: c.__name__)
def test_every_option_is_a_field_and_every_field_an_option(generated):
    cls = generated.options_class
    fields = {f.name: f for f in option_fields(cls)}
    cmd = GROUP.commands[generated.__name__]
    names = {p.name for p in cmd.params}
    assert {p.name for p in visible(cmd)} == set(fields), "the options are exactly the option fields"
    for p in cmd.params:
        if p.name.startswith(DEPRECATED):  # an old spelling: it names a field's old flag
            assert any(p.opts[0] in spec_of(f).deprecated for f in fields.values()), p.opts
            continue
        f = fields[p.name]
        spec = spec_of(f)
        if spec.argument:
            continue
        assert p.opts[0] == flag_of(f)
        assert p.help == spec.help
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if spec.required or default is dataclasses.MISSING:
            assert p.required, p.name
        else:  # the default is the field's own, shown as the command line writes it
            assert p.default == (spec.show(default) if spec.show else default), p.name
    assert names >= set(fields)


def test_the_cli_holds_no_option_of_its_own():
    """typer.Option / typer.Argument appear only where commands are generated and for the global flags."""
    for path in CLI.glob("*.py"):
        if path.name in ("options.py", "__init__.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = [
            n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("Option", "Argument")
        ]  # fmt: skip
        assert not calls, f"{path.name} declares options by hand (line {calls[0].lineno})"


def flags_by_command() -> dict[str, dict[str, object]]:
    """{flag: {command: the type of the field behind it}}."""
    found: dict[str, dict[str, object]] = {}
    for generated in COMMANDS:
        hints = typing.get_type_hints(generated.options_class)
        for f in option_fields(generated.options_class):
            if not spec_of(f).argument:
                found.setdefault(flag_of(f), {})[generated.__name__] = hints[f.name]
    return found


def kind(hint) -> str:
    """A type as the command line sees it: Optional or not is the default's business, not the name's."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]  # fmt: skip
    (bare,) = args
    if isinstance(bare, type) and issubclass(bare, enum.Enum):
        return "choice:" + ",".join(sorted(m.value for m in bare))
    return str(bare)


def test_a_flag_that_several_commands_take_has_one_meaning_and_one_type():
    shared = {flag: where for flag, where in flags_by_command().items() if len(where) > 1}
    missing = sorted(set(shared) - set(MEANINGS))
    assert not missing, f"flags taken by several commands without an entry in settings.MEANINGS: {missing}"
    assert not set(MEANINGS) - set(shared), "MEANINGS names a flag no two commands take"
    for flag, where in shared.items():
        kinds = {kind(hint) for hint in where.values()}
        if flag == "--method":  # dense | bm25 everywhere; evaluate and search also fuse them (hybrid)
            assert all({"dense", "bm25"} <= {m.value for m in hint} for hint in where.values())
            continue
        if flag == "--data":  # evaluate takes several (a suite)
            kinds = {k.replace("list[pathlib.Path]", "<class 'pathlib.Path'>") for k in kinds}
        assert len(kinds) == 1, f"{flag}: {[(c, kind(hint)) for c, hint in where.items()]}"


def test_the_names_that_meant_two_things_are_gone():
    flags = flags_by_command()
    assert "--chunk-size" not in flags and "--max-batch" not in flags
    assert set(flags["--batch-size"]) == {"encode", "evaluate", "mine", "search", "serve"}  # texts per pass
    assert set(flags["--train-batch-size"]) == {"pretrain", "finetune"}
    assert "explain" not in flags["--top-k"] and "pairs" not in flags.get("--query", {})
    assert "bm25" in {m.value for m in flags["--method"]["mine"]}


# What was renamed, and what to use instead (RENAMED is read from the fields' declarations).
RENAMES = {
    ("encode", "--chunk-size"): "--docs-per-file",
    ("finetune", "--chunk-size"): "--grad-cache-chunk",
    ("explain", "--top-k"): "--top-tokens",
    ("pretrain", "--batch-size"): "--train-batch-size",
    ("finetune", "--batch-size"): "--train-batch-size",
    ("serve", "--max-batch"): "--batch-size",
    ("pairs", "--query"): "--query-source",
    ("mine", "--model bm25"): "--method bm25",
}


def test_the_renamed_table_is_what_was_renamed():
    assert RENAMED == RENAMES


@pytest.mark.parametrize(("where", "new"), [(k, v) for k, v in RENAMES.items() if " " not in k[1]])
def test_old_spellings_are_hidden_aliases_of_the_new_flag(where, new):
    name, old = where
    cmd = GROUP.commands[name]
    alias = next(p for p in cmd.params if old in p.opts)
    assert alias.hidden and alias.name.startswith(DEPRECATED)
    assert any(new in p.opts for p in visible(cmd))


def test_an_old_spelling_still_works_and_says_what_to_use(tmp_path):
    corpus = [{"_id": f"d{i}", "title": f"title {i} words", "text": f"text number {i} about things"} for i in range(6)]
    folder = write_beir(tmp_path / "c", corpus, [{"_id": "q", "text": "things"}], [("q", "d0", 1)])
    out = tmp_path / "pairs.jsonl"
    res = run_cli("pairs", "--corpus", folder / "corpus.jsonl", "--output", out, "--query", "title", "--negatives", "2")
    assert res.returncode == 0, res.stderr
    assert "--query is deprecated" in res.stderr and "use --query-source" in res.stderr
    assert out.read_text().count("\n") == 6


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "--corpus", "missing.jsonl", "--output", "out", "--precision", "fp64"],
        ["encode", "--corpus", "missing.jsonl", "--output", "out", "--dtype", "int8"],
        ["search", "--queries", "q.jsonl", "--output", "r", "--method", "hybrid", "--fusion", "best"],
        ["serve", "--precision", "bf17"],
    ],
)
def test_choices_are_checked_before_anything_loads(argv):
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2
    assert "Invalid value" in res.output


def test_a_command_whose_names_collide_is_refused_when_it_is_built():
    @dataclasses.dataclass(frozen=True)
    class Clashing:
        docs: int = option(1, "documents", deprecated=("--chunk-size",))
        chunk_size: int = option(2, "texts")

    with pytest.raises(TypeError, match="--chunk-size"):
        command(Clashing, lambda o: None, "clashing")
    with pytest.raises(TypeError, match="help"):
        option(1)


def test_settings_are_frozen_and_resolve_into_a_new_object(tmp_path):
    given = FinetuneOptions(output=tmp_path / "m")
    resolved = given.resolve("cpu")
    assert given.group_size is None and given.lr is None and given.profile is None  # untouched
    assert resolved.group_size == 2 and resolved.lr == 1e-3 and resolved.profile == "cpu"
    assert FinetuneOptions(output=tmp_path / "m", full=True).resolve("cuda:0").lr == 1e-5
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.lr = 1.0


def test_mine_takes_bm25_as_a_method_and_the_old_model_bm25_with_a_warning(tmp_path):
    corpus = [{"_id": f"d{i}", "title": "", "text": f"words about topic {i % 3} and more {i}"} for i in range(12)]
    folder = write_beir(tmp_path / "c", corpus, [{"_id": "q", "text": "topic 1"}], [("q", "d1", 1)])
    shutil.copy(folder / "qrels" / "test.tsv", folder / "qrels" / "train.tsv")
    rows = {}
    for spelling in (["--method", "bm25"], ["--model", "bm25"]):
        out = tmp_path / f"{spelling[0]}.jsonl"
        res = run_cli("mine", *spelling, "--data", folder, "--output", out, "--negatives", "3", "--range", "0-10")
        assert res.returncode == 0, res.stderr
        assert ("--model bm25 is deprecated" in res.stderr) == (spelling[0] == "--model")
        rows[spelling[0]] = out.read_text()
    assert rows["--method"] == rows["--model"]  # the same rows either way
