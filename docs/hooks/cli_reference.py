"""MkDocs hook: the CLI reference, generated at build time from the commands themselves.

docs/cli.md is written by hand up to the marker line `<!-- cli-reference -->`; this hook replaces
the marker with every command's usage, help and options, read from the click group that typer builds
from `llara.cli.app`. Nothing is written into docs/. It also publishes benchmarks/RESULTS.md as the
site page `results.md`, so the guides can link the measured numbers where they live.
"""

from __future__ import annotations

import html
import re
from enum import Enum
from pathlib import Path

from mkdocs.structure.files import File

MARKER = "<!-- cli-reference -->"
MEANINGS_MARKER = "<!-- meanings -->"
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def on_files(files, config):
    """Add benchmarks/RESULTS.md to the site as results.md (read where it lives, not copied into docs/)."""
    files.append(File.generated(config, "results.md", abs_src_path=str(RESULTS)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "cli.md":
        return markdown
    for marker in (MARKER, MEANINGS_MARKER):
        if markdown.count(marker) != 1:
            raise ValueError(f"docs/cli.md must hold the line {marker} exactly once")
    return markdown.replace(MARKER, cli_reference()).replace(MEANINGS_MARKER, meanings())


def meanings() -> str:
    """The flags several commands share, with their one meaning, and the renamed spellings."""
    from llara.cli import RENAMED
    from llara.settings import MEANINGS

    rows = ["| option | means, in every command that takes it |", "|---|---|"]
    rows += [f"| {_code(flag)} | {html.escape(text, quote=False)} |" for flag, text in sorted(MEANINGS.items())]
    rows += ["", "Renamed, the old spelling accepted for one release with a warning:", ""]
    rows += ["| command | old | new |", "|---|---|---|"]
    rows += [f"| {command} | {_code(old)} | {_code(new)} |" for (command, old), new in RENAMED.items()]
    return "\n".join(rows)


def cli_reference() -> str:
    import typer

    from llara.cli import app

    group = typer.main.get_command(app)
    ctx = _context(group, "llara")
    parts = ["## Global options", "", "Given before the command: `llara [GLOBAL OPTIONS] COMMAND [OPTIONS]`.", ""]
    parts += _options_table(group, ctx)
    for name in sorted(group.commands):
        command = group.commands[name]
        if getattr(command, "hidden", False):
            continue
        sub = _context(command, name, parent=ctx)
        usage = command.get_usage(sub).strip()
        usage = re.sub(r"^Usage:\s*", "", usage)
        parts += ["", f"## llara {name}", "", "```text", usage, "```", ""]
        parts += [_help_text(command.help or ""), ""]
        parts += _options_table(command, sub)
    return "\n".join(parts) + "\n"


def _context(command, name, parent=None):
    """A click context for usage and choice display; typer may vendor its own click."""
    context_class = getattr(command, "context_class", None)
    if context_class is None:
        import click

        context_class = click.Context
    return context_class(command, info_name=name, parent=parent)


def _help_text(text: str) -> str:
    """The command's docstring as markdown: click's \\f cuts it, \\b marks are dropped, and `<` outside
    code spans is escaped (a `<split>` would otherwise read as an HTML tag)."""
    text = text.split("\f", 1)[0]
    text = "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code spans
        parts = [text]
    return "`".join(p if i % 2 else html.escape(p, quote=False) for i, p in enumerate(parts))


def _options_table(command, ctx) -> list[str]:
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    if not params:
        return ["No options."]
    rows = ["| option | type | default | help |", "|---|---|---|---|"]
    for p in params:
        rows.append(f"| {_names(p)} | {_type(p, ctx)} | {_default(p)} | {_cell(p, 'help')} |")
    return rows


def _code(text: str) -> str:
    return f"<code>{html.escape(text, quote=False).replace('|', '&#124;')}</code>"


def _names(p) -> str:
    if p.param_type_name == "argument":
        return _code(p.name.upper()) + " (argument)"
    names = " / ".join([", ".join(p.opts), ", ".join(p.secondary_opts)] if p.secondary_opts else [", ".join(p.opts)])
    return _code(names)


def _type(p, ctx) -> str:
    if getattr(p, "is_flag", False) and not getattr(p, "count", False):
        return "flag"
    display = getattr(p, "display_type", None)
    if callable(display):  # typer >= 0.25: "<int>", "<dense|bm25|hybrid>", "<list[Path]>"
        label = display(ctx).strip("<>")
    else:  # click's own types
        choices = getattr(p.type, "choices", None)
        label = "|".join(str(getattr(c, "value", c)) for c in choices) if choices else p.type.name
    if getattr(p, "multiple", False) and not label.startswith("list["):
        label += ", repeatable"
    return _code(label)


def _default(p) -> str:
    if p.required:
        return "required"
    value = p.default
    if callable(value) or value is None or value == "" or value == ():
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        if p.secondary_opts:
            return _code(p.opts[0] if value else p.secondary_opts[0])
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value)
    return _code(str(value))


def _cell(p, attribute: str) -> str:
    """Plain help text in a table cell: HTML and the characters markdown reads escaped."""
    text = " ".join((getattr(p, attribute, None) or "").split())
    text = html.escape(text, quote=False).replace("|", "&#124;")
    return re.sub(r"([\\`*_\[\]])", r"\\\1", text)
