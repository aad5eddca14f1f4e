"""`chatbridge accounts login`: sign every account of an accounts file in and write a tokens file.

The provider does the sign-in (its plugin's `account_signin`); this command shows progress,
a masked summary, and replaces the tokens file atomically under the same lock the gateway's
own refresh takes. Exit codes, so scripts can tell the outcomes apart: 0 every account signed in,
3 the tokens file was written but some accounts failed, 1 nothing was written (no account
signed in, or the file could not be written), 2 the command or its input is wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chatbridge.commands.settings_errors import describe
from chatbridge.config import Settings
from chatbridge.pool.accounts import AccountsFile, read_accounts_file
from chatbridge.pool.signin import Authenticator, SignInOutcome, SignInPolicy, sign_in_all
from chatbridge.pool.sources import TokenEntry
from chatbridge.pool.tokens_file import TokensFileError, backup_path, exclusive_lock, replace_tokens_file
from chatbridge.providers import registry
from chatbridge.providers.wiring import AccountSignIn

LOCK_WAIT = 120.0  # seconds to wait for a gateway refresh that is writing the same file
EXIT_NOTHING_WRITTEN = 1
EXIT_SOME_FAILED = 3

accounts_app = typer.Typer(no_args_is_help=True, help="Account tooling: sign accounts in to get tokens.")


@accounts_app.command("login")
def login(
    accounts: Path = typer.Option(..., "--accounts", help='Accounts file: one {"email": ..., "password": ...} JSON object a line.'),
    out: Path = typer.Option(..., "--out", help="Tokens file to write (atomically; the old one is kept as .backup)."),
    concurrency: Optional[int] = typer.Option(None, help="Sign-ins at once (default: SIGNIN_CONCURRENCY or 4)."),
    base_url: Optional[str] = typer.Option(None, help="The provider's base URL (default: its *_BASE_URL variable)."),
    attempts: Optional[int] = typer.Option(None, help="Tries per account for retryable errors (default: SIGNIN_ATTEMPTS or 3)."),
    provider: str = typer.Option(registry.TOKENS_PROVIDER, help="Which provider's accounts these are."),
) -> None:
    """Sign every account in and write their tokens to a tokens file."""
    console = Console(stderr=True)
    logging.getLogger("chatbridge.pool.signin").setLevel(logging.ERROR)  # the summary table says it all
    signin = _signin(console, provider, base_url)
    parsed = _read_accounts(console, accounts)
    policy = replace(signin.policy, concurrency=concurrency or signin.policy.concurrency,
                     attempts=attempts or signin.policy.attempts)
    outcomes = asyncio.run(_sign_in_with_progress(console, parsed, signin, policy))
    _summary(console, outcomes)
    tokens = [TokenEntry(o.token.token.reveal(), o.account.email) for o in outcomes if o.token is not None]
    failed = len(outcomes) - len(tokens)
    if not tokens:
        console.print(f"[red]No account signed in; {out} was not touched.[/red]")
        raise typer.Exit(EXIT_NOTHING_WRITTEN)
    try:
        with exclusive_lock(out, wait=LOCK_WAIT) as locked:
            if not locked:
                console.print(f"[red]Another process (a running gateway's token refresh?) is writing {out}; "
                              f"it was not touched. Try again in a moment.[/red]")
                raise typer.Exit(EXIT_NOTHING_WRITTEN)
            had_file = out.exists()
            replace_tokens_file(out, tokens, note=f"{len(tokens)} signed in, {failed} failed")
    except (TokensFileError, OSError) as exc:
        console.print(f"[red]{exc}; {out} was not touched.[/red]")
        raise typer.Exit(EXIT_NOTHING_WRITTEN) from None
    backup = f" (previous file kept as {backup_path(out).name})" if had_file else ""
    console.print(f"Wrote {len(tokens)} token(s) to {out}{backup}; {failed} account(s) failed.")
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _signin(console: Console, provider: str, base_url: str | None) -> AccountSignIn:
    from pydantic import ValidationError

    if provider not in registry.names():
        console.print(f"[red]Unknown provider {provider!r}: one of {', '.join(registry.names())}[/red]")
        raise typer.Exit(2)
    plugin = registry.plugin(provider)
    overrides = {plugin.base_url_setting: base_url} if base_url and plugin.base_url_setting else {}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        console.print(describe(exc, with_input=True, prefix="[red]Invalid configuration:[/red] "), highlight=False)
        raise typer.Exit(2) from None
    signin = plugin.account_signin(settings.section(provider), settings.http_settings())
    if signin is None:
        console.print(f"[red]The {provider} provider does not sign accounts in from an accounts file.[/red]")
        raise typer.Exit(2)
    return signin


def _read_accounts(console: Console, path: Path) -> AccountsFile:
    try:
        parsed = read_accounts_file(path)
    except (OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]Cannot read {path}: {exc}[/red]")
        raise typer.Exit(2) from None
    for problem in parsed.problems:
        console.print(f"[yellow]{path}: {problem}[/yellow]")
    if not parsed.accounts:
        console.print(f"[red]{path} holds no usable account.[/red]")
        raise typer.Exit(2)
    return parsed


async def _sign_in_with_progress(console: Console, parsed: AccountsFile, signin: AccountSignIn,
                                 policy: SignInPolicy) -> list[SignInOutcome]:
    columns = (TextColumn("signing in"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
               TimeElapsedColumn())
    authenticate: Authenticator = signin.authenticate
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("sign-in", total=len(parsed.accounts), failed=0)
            failed = 0

            def done(outcome: SignInOutcome) -> None:
                nonlocal failed
                failed += 0 if outcome.ok else 1
                progress.update(task, advance=1, failed=failed)

            return await sign_in_all(parsed.accounts, authenticate, policy, on_done=done)
    finally:
        await signin.close.aclose()


def _summary(console: Console, outcomes: list[SignInOutcome]) -> None:
    table = Table(title="Sign-in summary")
    for column in ("line", "account", "result", "attempts", "detail"):
        table.add_column(column)
    for outcome in outcomes:
        line = str(outcome.account.line or "")  # masked e-mails look alike: the line number tells them apart
        if outcome.token is not None:
            expires = outcome.token.expires_at
            detail = f"token {outcome.token.token.masked}" + (f", expires {_when(expires)}" if expires else "")
            table.add_row(line, outcome.account.masked, "[green]signed in[/green]", str(outcome.attempts), detail)
        else:
            kind = "refused" if outcome.permanent else "failed"
            table.add_row(line, outcome.account.masked, f"[red]{kind}[/red]", str(outcome.attempts), outcome.error or "")
    console.print(table)
    ok = sum(1 for o in outcomes if o.ok)
    console.print(f"{ok} signed in, {len(outcomes) - ok} failed.")


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))
