"""The `llara` command: thin typer commands over the library. Bad input exits 2 with one line.

The app, its global options and `main()` (errors, out of memory) live here; the commands, grouped by
concern, in `retrieval` (encode, index, search), `training` (pretrain, finetune, pairs, mine),
`evaluation` (evaluate, compare, ablate, demo) and `models` (explain, export, serve); the options
several commands share are declared once in `options`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from llara.cli import evaluation, models, retrieval, training
from llara.cli.options import console, renamed
from llara.errors import LlaraError

if TYPE_CHECKING:
    from llara.data.io import BadRows

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="LLaRA dense retrieval: adapt, fine-tune, encode, search and evaluate decoder-only LLMs.",
)
_state = {"debug": False}


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="only warnings and results")] = False,
    skip_bad_rows: Annotated[
        bool, typer.Option("--skip-bad-rows", help="skip and count malformed input rows instead of stopping")
    ] = False,
) -> None:
    from llara.data.io import BadRows, set_bad_rows

    _state["debug"] = debug
    policy = set_bad_rows(BadRows(skip=skip_bad_rows))
    ctx.call_on_close(lambda: _print_warnings(policy))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("faiss", "faiss.loader", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from llara.compat import quiet_dependency_logs

    quiet_dependency_logs()
    if not debug:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()


def _print_warnings(policy: BadRows) -> None:
    """When the command ends, error or not: one line per kind of odd row kept or left out
    ("2 empty documents kept (first: corpus.jsonl:17)"), then "skipped N bad rows (first: ...)"."""
    for line in [*policy.warnings(), policy.summary()]:
        if line:  # escape: ids and paths may look like rich markup ("[/b]")
            console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True, highlight=False)


COMMANDS = (
    evaluation.evaluate,
    evaluation.demo,
    retrieval.encode,
    retrieval.index,
    retrieval.search,
    training.finetune,
    training.mine,
    training.pairs,
    training.pretrain,
    training.pipeline,
    models.explain,
    models.export,
    evaluation.ablate,
    evaluation.compare,
    models.serve,
)
for command in COMMANDS:
    app.command()(command)
# Old spellings kept one release, each warning what to use (docs/cli.md prints them).
RENAMED = {**renamed(COMMANDS), **training.OLD_SPELLINGS}


def main() -> None:
    try:
        app()
    except SystemExit as e:  # typer ends every command so, a finished one with code 0
        _leave_process_group(finished=e.code in (None, 0))
        raise
    except LlaraError as e:
        if _state["debug"]:
            raise
        # escape: ids and paths in the message may look like rich markup ("[/b]")
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # out of memory despite the estimate: say so and what to change, not a traceback
        if _state["debug"] or not _out_of_memory(e):
            raise
        console.print(
            f"[bold red]error:[/] out of memory ({escape(str(e).splitlines()[0][:200])}); lower --batch-size, "
            "--group-size or the max lengths, or add --grad-cache / --gradient-checkpointing",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


def _leave_process_group(finished: bool) -> None:
    """Under torchrun, leave the process group (HF Trainer opened it) before exiting. A finished rank waits
    for the others, destroys the group and ends without the interpreter's teardown: there gloo's C++
    objects can still abort a rank whose work is done ("terminate called without an active exception",
    SIGABRT; 1 run in 30 of a 2-rank CPU fine-tune, even with the group destroyed), failing a finished run.
    Its outputs are written and closed by then (atomic writes), so nothing is lost by skipping it."""
    torch = sys.modules.get("torch")  # only a command that imported torch can have opened one
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    if finished:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    if finished:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e)
