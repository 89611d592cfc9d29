"""The documentation is tested: docs/api.md's python blocks run, and every `llara` command line in the
README and in every docs/*.md page names real commands, options and config files."""

import re
import shlex
from pathlib import Path

import pytest
import typer

from llara.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODEL_LINE = 'MODEL = "smollm2"'


def code_blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_api_examples_run(tiny_model_dir, tmp_path, monkeypatch):
    blocks = code_blocks(DOCS / "api.md", "python")
    assert len(blocks) >= 6
    source = "\n".join(blocks)
    assert source.count(MODEL_LINE) == 1
    source = source.replace(MODEL_LINE, f"MODEL = {str(tiny_model_dir)!r}")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(source, str(DOCS / "api.md"), "exec"), namespace)  # noqa: S102 - our own docs
    assert (tmp_path / "my-retriever-st" / "modules.json").is_file()


def command_lines(path: Path) -> list[list[str]]:
    """Each `llara ...` invocation in the page's bash blocks, as argv after `llara`."""
    found = []
    for block in code_blocks(path, "bash"):
        text = re.sub(r"\\\n", " ", block)
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            words = shlex.split(line) if line and not line.startswith("#") else []
            for start, w in enumerate(words):
                if w == "llara" or (w == "-m" and start + 1 < len(words) and words[start + 1] == "llara"):
                    first = start + (1 if w == "llara" else 2)
                    argv = []
                    for word in words[first:]:
                        if word in ("&&", "||", "|", ";"):
                            break
                        argv.append(word)
                    found.append(argv)
                    break
    return found


def cli_options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    options = {}
    for name, command in group.commands.items():
        options[name] = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    options[""] = {opt for p in group.params for opt in (*p.opts, *p.secondary_opts)}
    return options


# Every page of the site, and the README. The pages that teach a job must keep their commands: the
# least number of `llara` lines each shows (a page not named here may have none).
PAGES = ["../README.md", *sorted(p.name for p in DOCS.glob("*.md"))]
LEAST_COMMANDS = {
    "../README.md": 10,
    "index.md": 1,
    "recipes-7b.md": 8,
    "guide-no-labels.md": 4,
    "guide-labels.md": 3,
    "guide-scale.md": 4,
    "guide-evaluation.md": 8,
    "guide-serving.md": 1,
    "guide-explain-export.md": 3,
}


def test_every_page_with_commands_is_checked():
    assert set(LEAST_COMMANDS) <= set(PAGES), set(LEAST_COMMANDS) - set(PAGES)
    with_commands = {page for page in PAGES if command_lines((DOCS / page).resolve())}
    assert set(LEAST_COMMANDS) <= with_commands, set(LEAST_COMMANDS) - with_commands


@pytest.mark.parametrize("page", PAGES)
def test_documented_commands_exist(page):
    path = (DOCS / page).resolve()
    options = cli_options()
    lines = command_lines(path)
    assert len(lines) >= LEAST_COMMANDS.get(page, 0), f"{path.name}: found only {lines}"
    for argv in lines:
        global_opts = [w for w in argv if w in options[""]]
        rest = [w for w in argv if w not in global_opts]
        if not rest or rest[0] in ("--help",):
            continue
        command = rest[0]
        assert command in options, f"{path.name}: unknown command `llara {command}`"
        for word in rest[1:]:
            if word.startswith("--"):
                opt = word.split("=")[0]
                assert opt in options[command] | {"--help"}, f"{path.name}: `llara {command}` has no option {opt}"
        for word in rest:
            if word.startswith("configs/"):
                assert (ROOT / word).is_file(), f"{path.name}: {word} does not exist"
