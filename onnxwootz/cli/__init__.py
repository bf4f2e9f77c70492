"""The `onnxwootz` command: a thin typer layer. Commands parse arguments, call the Python API,
and render its typed result (rich for people, `--json` for machines). Errors become one line
on stderr and a distinct exit code; `--debug` shows tracebacks."""

from __future__ import annotations

import importlib
import json
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import typer
from rich.console import Console

from onnxwootz.core.errors import InterruptedRunError, WootzError, first_line
from onnxwootz.core.results import Result

app = typer.Typer(
    help="Composability-based CNN pruning (Wootz, PLDI 2019) for ONNX models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


class RichProgress:
    """The library's Progress hook drawn as rich progress bars on stderr."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if not self.enabled:
            from onnxwootz.core.progress import NULL_PROGRESS

            with NULL_PROGRESS.task(description, total) as handle:
                yield handle
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[info]}")]
        with Progress(*columns, console=err_console, transient=True) as bar:
            task_id = bar.add_task(description, total=total, info="")

            class _Handle:
                def advance(self, amount: float = 1, **info: Any) -> None:
                    text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
                    bar.update(task_id, advance=amount, info=text)

            yield _Handle()


def execute(call: Callable[[], Result], json_output: bool, render: Callable[[Result], None]) -> None:
    """Run one API call and render it; map errors to one line and their exit code."""
    try:
        result = call()
    except WootzError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print(f"[bold red]interrupted:[/] {InterruptedRunError.__doc__}", soft_wrap=True)
        raise typer.Exit(InterruptedRunError.exit_code) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        line = first_line(exc)  # the type name alone for an exception without a message
        detail = line if line == type(exc).__name__ else f"{type(exc).__name__}: {line}"
        err_console.print(f"[bold red]internal error:[/] {detail} (run with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        render(result)


JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables.")

def _register_commands() -> None:
    """Every module in this package defines commands on `app`; heavy imports stay inside them."""
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_commands()


def main() -> None:
    app()
