"""The ``histobreast`` command: one typer app with one sub-command module per stage.

Each module in this package exposes ``register(app)``, which adds its commands or sub-apps.
"""

from __future__ import annotations

import errno
import importlib
import os

import typer

from histobreast import __version__

app = typer.Typer(
    name="histobreast",
    help="Train, compress, ensemble, evaluate and apply classifiers of H&E breast histopathology images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

# Order here is the order of `histobreast --help`.
COMMAND_MODULES: list[str] = [
    "data",
    "stain",
    "krem",
    "pretrain",
    "train",
    "evaluate",
    "compare",
    "predict",
    "slide",
    "explain",
    "prune",
    "ensemble",
    "export",
    "baseline",
    "ablate",
    "models",
    "demo",
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"histobreast {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """histobreast: H&E breast histopathology classifiers (Zhu et al. 2019, Liu et al. 2022)."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"histobreast.cli.{_name}").register(app)


# File-system errors that are the machine's state, not a bug: printed as one line even unnamed.
_USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG})


def main() -> None:
    """Entry point of the ``histobreast`` console script: user errors print one line, exit 1.

    User errors are ``HistobreastError`` and file-system errors on a named path (an output folder
    that is read-only or full, a file where a folder should be).
    """
    from rich.console import Console

    from histobreast.errors import HistobreastError

    try:
        app()
    except (HistobreastError, OSError) as err:
        if isinstance(err, OSError) and err.filename is None and err.errno not in _USER_ERRNOS:
            raise
        message = (
            err
            if isinstance(err, HistobreastError)
            else f"{err.filename or 'output'}: {err.strerror or os.strerror(err.errno or 0)}"
        )
        Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
