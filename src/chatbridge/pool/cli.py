"""Pool tooling on the command line: `chatbridge accounts login` and `chatbridge check-config`.

This module is an entry point, not part of the pool library: it builds the K2Think sign-in
through the composition root (`chatbridge.runtime`), so the pool modules themselves never
import a provider.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chatbridge.pool.accounts import AccountsFile, read_accounts_file
from chatbridge.pool.signin import SignInOutcome, sign_in_all
from chatbridge.pool.tokens_file import TokensFileError, backup_path, exclusive_lock, replace_tokens_file

LOCK_WAIT = 120.0  # seconds to wait for a gateway refresh that is writing the same file

accounts_app = typer.Typer(no_args_is_help=True, help="Account tooling: sign accounts in to get tokens.")


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
    app.command("check-config")(check_config)


@accounts_app.command("login")
def login(
    accounts: Path = typer.Option(..., "--accounts", help='Accounts file: one {"email": ..., "password": ...} JSON object a line.'),
    out: Path = typer.Option(..., "--out", help="Tokens file to write (atomically; the old one is kept as .backup)."),
    concurrency: Optional[int] = typer.Option(None, help="Sign-ins at once (default: SIGNIN_CONCURRENCY or 4)."),
    base_url: Optional[str] = typer.Option(None, help="K2Think base URL (default: K2THINK_BASE_URL)."),
    attempts: Optional[int] = typer.Option(None, help="Tries per account for retryable errors (default: SIGNIN_ATTEMPTS or 3)."),
) -> None:
    """Sign every account in and write their tokens to a tokens file."""
    import logging

    console = Console(stderr=True)
    logging.getLogger("chatbridge.pool.signin").setLevel(logging.ERROR)  # the summary table says it all
    settings = _settings(console, base_url)
    parsed = _read_accounts(console, accounts)
    from dataclasses import replace

    from chatbridge.providers.k2think.payload import K2ThinkEndpoints
    from chatbridge.runtime import K2ThinkSignIn, http_settings, signin_policy

    policy = signin_policy(settings)
    policy = replace(policy, concurrency=concurrency or policy.concurrency, attempts=attempts or policy.attempts)
    endpoints = K2ThinkEndpoints(settings.k2think_base_url, settings.k2think_chat_url, settings.k2think_guest_url,
                                 settings.k2think_signin_url)
    authenticate = K2ThinkSignIn(endpoints, http_settings(settings), settings.request_timeout)
    outcomes = asyncio.run(_sign_in_with_progress(console, parsed, authenticate, policy))
    _summary(console, outcomes)
    tokens = [o.token.token.reveal() for o in outcomes if o.token is not None]
    failed = len(outcomes) - len(tokens)
    if not tokens:
        console.print(f"[red]No account signed in; {out} was not touched.[/red]")
        raise typer.Exit(1)
    try:
        with exclusive_lock(out, wait=LOCK_WAIT) as locked:
            if not locked:
                console.print(f"[red]Another process (a running gateway's token refresh?) is writing {out}; "
                              f"it was not touched. Try again in a moment.[/red]")
                raise typer.Exit(1)
            had_file = out.exists()
            replace_tokens_file(out, tokens, note=f"{len(tokens)} signed in, {failed} failed")
    except (TokensFileError, OSError) as exc:
        console.print(f"[red]{exc}; {out} was not touched.[/red]")
        raise typer.Exit(1) from None
    backup = f" (previous file kept as {backup_path(out).name})" if had_file else ""
    console.print(f"Wrote {len(tokens)} token(s) to {out}{backup}; {failed} account(s) failed.")


def _settings(console: Console, base_url: str | None):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from chatbridge.config import load_settings

    overrides = {"k2think_base_url": base_url} if base_url else {}
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        console.print(f"[red]The configuration is invalid:[/red]\n{_validation_text(exc)}\nRun `chatbridge check-config` for details.")
        raise typer.Exit(2) from None


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


async def _sign_in_with_progress(console, parsed, authenticate, policy) -> list[SignInOutcome]:  # type: ignore[no-untyped-def]
    columns = (TextColumn("signing in"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
               TimeElapsedColumn())
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
        await authenticate.aclose()


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
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def check_config(
    example: bool = typer.Option(False, "--example", help="Print a complete, commented example .env and exit."),
    env_file: Path = typer.Option(Path(".env"), "--env-file", help="The .env file to read."),
) -> None:
    """Check the environment, .env and every file they name; exit non-zero on errors."""
    from chatbridge.pool.checks import EXAMPLE_ENV, check_settings

    if example:
        typer.echo(EXAMPLE_ENV, nl=False)
        return
    from pydantic import ValidationError

    from chatbridge.config import Settings

    console = Console(soft_wrap=True)
    try:
        settings = Settings(_env_file=env_file if env_file.exists() else None)  # type: ignore[call-arg]
    except ValidationError as exc:
        console.print("[red]✗ error[/red]   the settings cannot be read:")
        console.print(_validation_text(exc))
        raise typer.Exit(1) from None
    findings = check_settings(settings, env_file)
    marks = {"ok": "[green]✓ ok[/green]     ", "warning": "[yellow]! warning[/yellow]", "error": "[red]✗ error[/red]  "}
    for finding in findings:
        console.print(f"{marks[finding.level]} [bold]{finding.subject}[/bold]: {finding.message}", highlight=False)
        if finding.fix and finding.level != "ok":
            console.print(f"           fix: {finding.fix}", highlight=False)
    errors = sum(1 for f in findings if f.level == "error")
    warnings = sum(1 for f in findings if f.level == "warning")
    console.print(f"\n{errors} error(s), {warnings} warning(s).")
    if errors:
        raise typer.Exit(1)


def _validation_text(exc: Exception) -> str:
    from pydantic import ValidationError

    assert isinstance(exc, ValidationError)
    lines = []
    for item in exc.errors():
        name = ".".join(str(p) for p in item["loc"]).upper() or "settings"
        lines.append(f"  {name}: {item['msg']} (got {_short(item.get('input'))})")
    return "\n".join(lines)


def _short(value: object) -> str:
    from chatbridge.core.secrets import redact

    text = redact(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."
