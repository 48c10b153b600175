"""The `skiff` command line. It shows; the router decides and the local/cloud parts do the work."""

from __future__ import annotations

import os
import sys
import threading
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import typer

from skiff.app.common import assistant_session, dump, err, fail, out
from skiff.app.terminal_text import terminal_safe
from skiff.app.render import (
    LocalWorkBar,
    abstention_line,
    allocation_line,
    index_summary_table,
    settings_table,
    source_line,
    status_table,
)
from skiff.app.cloud_cli import cloud_app, show
from skiff.app.model_cli import model_app
from skiff.app.router_cli import feedback, router_app
from skiff.app.export_cli import export
from skiff.app.mcp_server import mcp
from skiff.app.serve_cli import serve

app = typer.Typer(
    name="skiff",
    help="A local-first assistant for your notes, in the terminal.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(router_app, name="router")
app.add_typer(cloud_app, name="cloud")
app.add_typer(model_app, name="model")
app.command()(feedback)
app.command()(show)
app.command()(serve)
app.command()(mcp)
app.command()(export)


def _version() -> str:
    try:
        return version("skiff")
    except PackageNotFoundError:
        return "unknown"


def _version_callback(value: bool) -> None:
    if value:
        print(f"skiff {_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    show_version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                      help="Print the version and exit."),
) -> None:
    """skiff answers questions from your notes with a local model. With no command it opens the chat
    (TUI); `skiff index` then `skiff ask` work from the shell."""
    if ctx.invoked_subcommand is None:
        from skiff.app.tui.app import SkiffApp

        SkiffApp().run()


@app.command()
def index(
    paths: Optional[list[Path]] = typer.Argument(
        None, help="Folders or files; none re-indexes every folder indexed before."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of a table."),
    max_file_mb: Optional[float] = typer.Option(None, help="Skip files larger than this."),
    chunk_tokens: Optional[int] = typer.Option(None, help="Chunk size bound in embedder tokens."),
) -> None:
    """Index notes: Markdown, text, reStructuredText, Org and PDF. Incremental; bad files are skipped with a reason."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from skiff.local.assets import MissingAssetError
    from skiff.assistant import DiskFullError

    cancel = threading.Event()
    show_bar = err.is_terminal and not as_json
    with assistant_session(max_file_mb=max_file_mb, chunk_tokens=chunk_tokens) as assistant:
        try:
            if show_bar:
                with Progress(
                    TextColumn("[bold]indexing"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[chunks]} chunks"),
                    TimeElapsedColumn(),
                    TextColumn("{task.fields[current]}", style="dim", markup=False),
                    console=err,
                    transient=True,
                ) as bar:
                    task = bar.add_task("index", total=None, chunks=0, current="")

                    def on_progress(p):
                        bar.update(task, completed=p.files_done, total=p.files_total, chunks=p.chunks_added,
                                   current=os.path.basename(p.current)[:40])

                    summary = assistant.index(paths, progress=on_progress, cancel=cancel)
            else:
                summary = assistant.index(paths, cancel=cancel)
        except KeyboardInterrupt:
            cancel.set()
            fail("interrupted; files finished so far are indexed, the rest will be on the next run", 130)
        except (MissingAssetError, DiskFullError) as error:
            fail(str(error))
    if as_json:
        dump(summary.as_dict())
    else:
        out.print(index_summary_table(summary))


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object: answer, route, sources, timings, tokens."
    ),
    no_notes: bool = typer.Option(False, "--no-notes", help="Do not retrieve notes."),
    route: Optional[str] = typer.Option(None, help="auto (the router decides), local, local+ or cloud."),
    compare: bool = typer.Option(False, "--compare", help="Answer with both models; judging both teaches the router."),
    offline: Optional[bool] = typer.Option(
        None, "--offline/--online", help="Never contact the cloud for this question."
    ),
    model: Optional[Path] = typer.Option(None, help="GGUF model file (default: the one `skiff model list` marks)."),
    top_k: Optional[int] = typer.Option(None, help="Note chunks to give the model."),
    max_tokens: Optional[int] = typer.Option(None, help="Most tokens to generate."),
    n_ctx: Optional[int] = typer.Option(None, help="Context window in tokens."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for the model."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature (0 = greedy)."),
) -> None:
    """Answer a question, grounded in your notes, streaming as it writes: locally, or from the cloud
    when the router judges it hard."""
    from rich.markup import escape

    from skiff.local.assets import MissingAssetError
    from skiff.router.policy import ROUTES

    if route not in (None, "auto", *ROUTES):
        fail(f"unknown route {route!r}; use {', '.join(ROUTES)} or auto")
    if compare and route not in (None, "auto"):
        fail("--compare answers with both models; leave out --route")
    streamed = not as_json
    work_bar = LocalWorkBar(err) if streamed and err.is_terminal else None

    def on_token(piece: str) -> None:
        if work_bar is not None:
            work_bar.stop()
        sys.stdout.write(terminal_safe(piece))
        sys.stdout.flush()

    def on_compare_token(side: str, piece: str) -> None:
        if side not in shown_sides:
            shown_sides.append(side)
            sys.stdout.write(("\n\n" if len(shown_sides) > 1 else "") + f"── {side} ──\n")
        on_token(piece)

    def on_set_aside(reason: str) -> None:
        # The draft stays on screen above; the stronger answer streams below this line.
        sys.stdout.write("\n")
        sys.stdout.flush()
        err.print(f"[yellow]↳ {escape(reason)}[/]", highlight=False)

    shown_sides: list[str] = []
    cancel = threading.Event()
    with assistant_session(model_path=model, top_k=top_k, max_tokens=max_tokens, n_ctx=n_ctx,
                           n_threads=threads, temperature=temperature, offline=offline) as assistant:
        try:
            if compare:
                answers = list(assistant.compare(question, use_notes=not no_notes,
                                                 on_token=on_compare_token if streamed else None, cancel=cancel))
            else:
                answers = [assistant.ask(question, use_notes=not no_notes,
                                         route=None if route in (None, "auto") else route,
                                         on_token=on_token if streamed else None, cancel=cancel,
                                         on_progress=work_bar.update if work_bar is not None else None,
                                         on_set_aside=on_set_aside if streamed else None)]
                if streamed and answers[0].local_offered and sys.stdin.isatty() and err.is_terminal:
                    sys.stdout.write("\n")
                    _report(answers[0])
                    if typer.confirm("The cloud answer broke off. Answer locally instead?", default=True, err=True):
                        answers = [assistant.ask(question, use_notes=not no_notes, route="local",
                                                 on_token=on_token, cancel=cancel)]
        except KeyboardInterrupt:
            cancel.set()
            fail("\ninterrupted", 130)
        except (MissingAssetError, FileNotFoundError, ValueError) as error:
            fail(str(error))
        finally:
            if work_bar is not None:
                work_bar.stop()
    if as_json:
        dump([a.as_dict() for a in answers] if compare else answers[0].as_dict())
        return
    sys.stdout.write("\n")
    for answer in answers:
        _report(answer)
    if compare:
        err.print(f"[dim]judge each: skiff feedback good|bad {answers[0].id} (local), "
                  f"skiff feedback good|bad {answers[-1].id} ({answers[-1].answered_by})[/]", highlight=False)


def _report(answer) -> None:
    """Notices, sources and the one-line footer that follow a streamed answer."""
    from rich.markup import escape

    for notice in answer.notices:  # may quote a server: its brackets are text, not markup
        err.print(f"[yellow]note:[/] {escape(notice)}", highlight=False)
    if answer.sources:
        out.print("\n[bold]Sources[/]")
        for source in answer.sources:
            out.print(source_line(source), highlight=False)
    timing = answer.timings
    by = answer.route if answer.answered_by == answer.route else f"{answer.route} → answered {answer.answered_by}"
    cost = f" · ${answer.cost_usd:.4f}" if answer.cost_usd else ""
    if answer.allocation:
        err.print(f"[dim]local+: {allocation_line(answer.allocation)}[/]", highlight=False)
    if answer.abstained:
        err.print(f"[dim]notes check: {abstention_line(answer.abstention)}[/]", highlight=False)
    if answer.draft_check:
        check = answer.draft_check
        kept = "escalated" if check.get("escalated") else "kept"
        err.print(f"[dim]draft check: {escape(check['reason'])}; {kept}[/]", highlight=False)
    err.print(
        f"[dim]{by} · {answer.decision.reason} · {answer.tokens['completion']} tokens{cost} · "
        f"first token {timing['first_token_s'] or 0:.2f}s · total {timing['total_s']:.2f}s · id {answer.id}[/]",
        highlight=False,
    )


@app.command()
def tune(
    show_status: bool = typer.Option(False, "--status", help="Say where the personal adapter stands; train nothing."),
    forget: bool = typer.Option(False, "--forget", help="Delete the personal adapter and its checkpoint."),
) -> None:
    """Train a personal adapter: a LoRA over all your indexed notes, used under every answer until
    the notes change. Resumable: ctrl+c (or a kill) keeps a checkpoint, and the next run goes on."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cancel = threading.Event()
    with assistant_session() as assistant:
        if forget:
            assistant.personal.forget()
            out.print("personal adapter deleted")
            return
        if show_status:
            out.print(assistant.personal_status().describe())
            return
        try:
            if err.is_terminal:
                with Progress(TextColumn("[bold]training on your notes"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True) as bar:
                    task = bar.add_task("tune", total=None)
                    status = assistant.tune(progress=lambda done, total: bar.update(task, completed=done, total=total),
                                            cancel=cancel)
            else:
                status = assistant.tune(cancel=cancel)
        except KeyboardInterrupt:
            cancel.set()
            fail("interrupted; the last checkpoint is kept and `skiff tune` resumes from it", 130)
        except ValueError as error:
            fail(str(error))
    out.print(status.describe())


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show where skiff keeps things, the model, the index size and the cloud endpoint."""
    with assistant_session() as assistant:
        info = assistant.status()
    if as_json:
        dump(info)
    else:
        out.print(status_table(info))


@app.command()
def config(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective settings (file < SKIFF_* environment < flags), secrets masked."""
    from skiff.config.settings import config_file_path, load_settings

    try:
        settings = load_settings()
    except Exception as error:  # noqa: BLE001 - pydantic's ValidationError names the bad key and value
        fail(f"invalid configuration: {error}")
    values = settings.redacted()
    if as_json:
        dump({"config_file": str(config_file_path()), "settings": values})
    else:
        out.print(settings_table(values, config_file_path()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
