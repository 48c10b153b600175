"""`skiff serve`: the OpenAI-compatible endpoint on this machine, with its API key."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Optional

import typer

from skiff.app.common import assistant_session, err, fail

# uvicorn waits this long for answers in progress after ctrl+c before stopping them.
DRAIN_S = 30


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_key(settings, new_key: bool) -> str:
    """The key clients must send. Made on the first run (or with --new-key), stored mode 600 and
    shown this once on the terminal (never into a log); a key in the settings (SKIFF_SERVE_API_KEY)
    is used as it is."""
    from skiff.config.settings import KeyFileError, write_key_file

    try:
        key = None if new_key else settings.serve_key()
    except KeyFileError as error:
        fail(str(error))
    if key:
        err.print(f"[dim]API key: the one stored in {settings.serve_api_key_file} (or serve_api_key)[/]",
                  highlight=False)
        return key
    if new_key and settings.serve_api_key is not None and settings.serve_api_key.get_secret_value():
        fail("the serve_api_key setting (SKIFF_SERVE_API_KEY) sets the key; change it there")
    key = "sk-skiff-" + secrets.token_urlsafe(24)
    path = write_key_file(settings.serve_api_key_file, key)
    if err.is_terminal:
        err.print(f"[bold]API key[/] (shown this once; stored in {path}, mode 600):", highlight=False)
        err.print(key, markup=False, highlight=False)
    else:  # stderr goes to a log or a pipe: the key stays out of it
        err.print(f"API key made and stored in {path} (mode 600); it is not printed where a log could keep it",
                  highlight=False)
    return key


def serve(
    host: Optional[str] = typer.Option(None, help="Address to listen on (default: the serve_host setting, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, help="Port (default: the serve_port setting, 8764)."),
    allow_remote: bool = typer.Option(False, "--allow-remote",
                                      help="Listen on an address other machines can reach."),
    new_key: bool = typer.Option(False, "--new-key", help="Make a new API key (the old one stops working)."),
    offline: Optional[bool] = typer.Option(None, "--offline/--online", help="Never contact the cloud."),
) -> None:
    """Serve skiff as an OpenAI-compatible API (models skiff, skiff-local, skiff-cloud) for editors
    and agents: POST /v1/chat/completions (streamed or not), GET /v1/models. Ctrl+C finishes the
    answers in progress, then stops."""
    import logging

    import uvicorn

    from skiff.app.server import create_app

    with assistant_session(offline=offline) as assistant:
        settings = assistant.settings
        host = host or settings.serve_host
        port = port or settings.serve_port
        if not _is_loopback(host):
            if not allow_remote:
                fail(f"{host} is not a loopback address: other machines could reach your notes. "
                     "Pass --allow-remote if that is what you want.")
            err.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach it and has the key "
                      "can read your notes through skiff", highlight=False)
        key = _api_key(settings, new_key)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        err.print(f"skiff serve: http://{host}:{port}/v1 · models skiff, skiff-local, skiff-cloud · "
                  f"{settings.serve_queue_size} may wait for the local model", highlight=False)
        config = uvicorn.Config(create_app(assistant, key), host=host, port=port, log_level="info",
                                timeout_graceful_shutdown=DRAIN_S, access_log=True)
        try:
            uvicorn.Server(config).run()
        except KeyboardInterrupt:  # uvicorn drained and stopped, then passed ctrl+c on
            err.print("skiff serve: stopped", highlight=False)
        except OSError as error:
            fail(f"cannot listen on {host}:{port}: {error.strerror or error}")
