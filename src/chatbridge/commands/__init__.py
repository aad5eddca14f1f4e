"""The `chatbridge` command: `serve`, `check-config`, `accounts` and `version`."""

from __future__ import annotations

import typer

from chatbridge import __version__
from chatbridge.commands.accounts import accounts_app
from chatbridge.commands.check_config import check_config
from chatbridge.commands.serve import serve

app = typer.Typer(add_completion=False, no_args_is_help=True, help="chatbridge: one OpenAI-compatible API for web-chat AI services.")
app.command()(serve)
app.command("check-config")(check_config)
app.add_typer(accounts_app, name="accounts")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                      help="Print the version and exit."),
) -> None:
    """chatbridge: one OpenAI-compatible API for web-chat AI services."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
