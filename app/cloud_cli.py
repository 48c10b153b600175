"""`skiff cloud check|key` and `skiff show`: the cloud endpoint, its key, and what an answer sent."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.markup import escape

from skiff.app.common import assistant_session, dump, fail, out
from skiff.app.render import abstention_line

cloud_app = typer.Typer(help="The cloud endpoint: check it, store its API key.", no_args_is_help=True)


@cloud_app.command("check")
def check(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Ask the endpoint for its models (/v1/models): reachable, key accepted, model served?"""
    with assistant_session() as assistant:
        result = assistant.cloud_check()
    if as_json:
        dump(result)
    else:
        style = "green" if result["ok"] else "red"
        out.print(f"[{style}]{escape(result['message'])}[/]", highlight=False)  # it may quote the server
        if result.get("latency_s") is not None:
            out.print(f"[dim]{result['base_url']} · {result['latency_s'] * 1000:.0f} ms[/]", highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


@cloud_app.command("key")
def key(remove: bool = typer.Option(False, "--remove", help="Delete the stored key.")) -> None:
    """Store the endpoint's API key in a file only you can read (mode 600). Reads it from stdin,
    or asks for it without echoing; it is never printed."""
    from skiff.config.settings import load_settings, write_key_file

    try:
        path = load_settings().cloud_api_key_file.expanduser()
    except ValueError as error:  # an invalid configuration: said in a line, not a traceback
        fail(f"invalid configuration: {error}")
    if remove:
        path.unlink(missing_ok=True)
        out.print(f"removed {path}")
        return
    secret = typer.prompt("API key", hide_input=True, err=True) if sys.stdin.isatty() else sys.stdin.readline()
    if not secret.strip():
        fail("no key given; nothing written")
    write_key_file(path, secret)
    out.print(f"stored in {path} (mode 600)")


def show(
    answer_id: Optional[str] = typer.Argument(None, help="An answer id (default: the latest answer)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a recorded answer: its decision, and exactly what was sent to the cloud, if anything."""
    with assistant_session() as assistant:
        record = assistant.answer_record(answer_id)
    if record is None:
        fail(f"no answer with id {answer_id!r}" if answer_id else "no answers yet")
    if as_json:
        dump(record)
        return
    out.print(f"[bold]{escape(record['question'])}[/]  [dim]{record['id']} · {record['route']} → answered "
              f"{record['answered_by']} · {escape(record['model'])}[/]", highlight=False)
    out.print(escape(record["answer"]) if record["answer"] else "[dim](no text)[/]", highlight=False)
    out.print(f"\n[dim]reason: {escape(record['reason'])}[/]", highlight=False)
    if record.get("abstention"):
        out.print(f"[dim]notes check: {escape(abstention_line(record['abstention']))}[/]", highlight=False)
    sent = record.get("sent")
    if not sent:
        out.print("[dim]nothing left this machine for this answer[/]")
        return
    out.print(f"\n[bold]Sent to {escape(sent['endpoint'])} ({escape(sent['model'])})[/]", highlight=False)
    if sent.get("private_notes_withheld"):
        out.print(f"[dim]{sent['private_notes_withheld']} private note chunk(s) withheld[/]")
    for message in sent["messages"]:
        out.print(f"[cyan]{message['role']}:[/]", highlight=False)
        out.print(message["content"], highlight=False, markup=False)
    if record.get("cost_usd") is not None:
        out.print(f"[dim]cost ${record['cost_usd']:.6f} · tokens {json.dumps(record['tokens'])}[/]", highlight=False)
