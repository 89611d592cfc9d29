"""Commands generated from their job's dataclass: every option is a field, declared once (llara.settings).

`command(Options, run)` gives a typer command whose options are the fields of `Options` declared with
`llara.settings.option`: flag, type, choices, default and help all come from the field, so the CLI holds
no default of its own and an option that maps to no field cannot exist. The command builds `Options`
from what the user typed and calls `run(options)`. Old spellings (`deprecated=`) stay accepted for one
release, with a warning that names the new one.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from llara.settings import OptionSpec, flag_of, spec_of

console = Console(stderr=True, soft_wrap=True)  # progress and "wrote ..." lines (paths unbroken); results: stdout

DEPRECATED = "deprecated__"  # the parameter name prefix of an old spelling


def warn(text: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(text)}", soft_wrap=True, highlight=False)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` that are command-line options."""
    return [f for f in dataclasses.fields(cls) if spec_of(f) is not None]


def _default(f: dataclasses.Field, spec: OptionSpec) -> Any:
    if spec.required:
        return ...
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is dataclasses.MISSING:
        return ...
    return spec.show(value) if spec.show else value


def _cli_type(hint: Any, spec: OptionSpec) -> Any:
    if spec.parse is not None:
        return str
    if spec.required and type(None) in typing.get_args(hint):  # required on the command line: not optional there
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _parameter(name: str, cli_type: Any, default: Any, info: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[cli_type, info]
    )


def parameters(cls: type) -> tuple[list[inspect.Parameter], dict[str, tuple[str, str, str]]]:
    """The typer parameters of `cls`'s option fields, and {old spelling's parameter: (field, old flag,
    new flag)}."""
    hints = typing.get_type_hints(cls)
    params, old = [], {}
    seen: dict[str, str] = {}
    for f in option_fields(cls):
        spec = spec_of(f)
        flag = flag_of(f)
        for name in (flag, *spec.deprecated, *([spec.short] if spec.short else [])):
            if name in seen:
                raise TypeError(f"{cls.__name__}: {name} names both {seen[name]} and {f.name}")
            seen[name] = f.name
        cli_type = _cli_type(hints[f.name], spec)
        default = _default(f, spec)
        if spec.argument:
            info = typer.Argument(help=spec.help, show_default=default is not ...)
        else:
            decls = [flag, *([spec.short] if spec.short else [])]
            is_bool = cli_type is bool
            if is_bool and not flag.startswith("--no-") and f.name.replace("_", "-") == flag[2:]:
                decls[0] = f"{flag}/--no-{flag[2:]}"
            info = typer.Option(*decls, help=spec.help, envvar=spec.envvar, show_default=default is not ...)
        params.append(_parameter(f.name, cli_type, default, info))
        for spelling in spec.deprecated:
            name = DEPRECATED + spelling.lstrip("-").replace("-", "_")
            info = typer.Option(spelling, hidden=True, help=f"deprecated: use {flag}")
            params.append(_parameter(name, typing.Optional[cli_type], None, info))  # noqa: UP045 - a runtime type
            old[name] = (f.name, spelling, flag)
    # what the user must give first (arguments, then required options), each group in field order
    params.sort(key=lambda p: (not isinstance(typing.get_args(p.annotation)[1], typer.models.ArgumentInfo),
                               p.default is not ...))  # fmt: skip
    return params, old


def from_command_line(cls: type, values: dict[str, Any], old: dict[str, tuple[str, str, str]]) -> Any:
    """`cls` from what typer parsed: old spellings mapped (with a warning), text options read."""
    values = dict(values)
    for name, (field_name, spelling, new) in old.items():
        given = values.pop(name, None)
        if given is not None:
            warn(f"{spelling} is deprecated and will be removed in the next release: use {new}")
            values[field_name] = given
    for f in option_fields(cls):
        spec = spec_of(f)
        if spec.parse is not None and isinstance(values.get(f.name), str):
            values[f.name] = spec.parse(values[f.name])
    return cls(**values)


def command(cls: type, run: Callable[[Any], None], name: str | None = None) -> Callable[..., None]:
    """A typer command named `name` (default: run's name) whose options are `cls`'s option fields and
    whose help is run's docstring; it builds `cls` from the command line and calls `run` with it."""
    params, old = parameters(cls)

    def generated(**values: Any) -> None:
        run(from_command_line(cls, values, old))

    generated.__name__ = name or run.__name__
    generated.__qualname__ = generated.__name__
    generated.__doc__ = run.__doc__
    generated.__signature__ = inspect.Signature(params, return_annotation=None)
    generated.__annotations__ = {p.name: p.annotation for p in params}
    generated.options_class = cls
    return generated


def renamed(commands) -> dict[tuple[str, str], str]:
    """{(command, old spelling): the flag to use} of generated `commands`, read from their fields."""
    return {
        (c.__name__, old): flag_of(f)
        for c in commands
        for f in option_fields(c.options_class)
        for old in spec_of(f).deprecated
    }
