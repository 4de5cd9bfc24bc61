"""The ``provenir`` command. Thin: parse, call the library, print.

Commands live in ``provenir._cli.<area>`` modules, each with a ``register(app)`` function; they
import heavy libraries inside the command functions, so ``provenir --help`` stays fast (no torch,
ray or transformers is imported).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

import typer

from provenir import __version__

app = typer.Typer(
    name="provenir",
    help="Reproducible, provenance-tracked LLM post-training on a laptop or a Ray cluster.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"provenir {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Reproducible, provenance-tracked LLM post-training."""


def _register_commands() -> None:
    import provenir._cli as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"provenir._cli.{info.name}").register(app)
    groups = [group.typer_instance for group in app.registered_groups if group.typer_instance]
    for registered in [command for typer_app in (app, *groups) for command in typer_app.registered_commands]:
        if registered.callback is not None:
            registered.callback = _stops_cleanly(registered.callback)


def _stops_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose training run Ctrl-C or SIGTERM stopped prints one line and exits 130/143.

    (Typer would turn the ``KeyboardInterrupt`` into a bare exit 130, whatever the signal.)
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from provenir.train._stop import TrainingStopped

        try:
            return command(*args, **kwargs)
        except TrainingStopped as stop:
            from provenir._cli._common import stopped_exit

            raise stopped_exit(stop) from None

    return wrapper


_register_commands()


def _typer_usage_errors() -> tuple[type[BaseException], ...]:
    # recent typer vendors its own click: its usage errors are not click's classes
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - typer built on the click package
        return ()
    return (ClickException,)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a :class:`ProvenirError` becomes one red line on stderr and exit code 2.

    With ``--json``, stdout carries only the JSON document (see :mod:`provenir._cli._common`).
    """
    import click
    import typer
    from rich.markup import escape

    from provenir._cli._common import err_console, json_stdout
    from provenir.core.errors import ProvenirError

    try:
        # outside standalone mode click returns a command's exit code instead of exiting
        with json_stdout():
            rc = app(args=argv, prog_name="provenir", standalone_mode=False)
    except ProvenirError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            err_console().print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        err_console().print("[red]aborted[/]")
        sys.exit(130)
    except (click.ClickException, *_typer_usage_errors()) as exc:
        exc.show()  # usage errors: click's own message and exit code 2
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
