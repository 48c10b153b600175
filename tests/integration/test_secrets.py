"""The API key never lands anywhere skiff writes.

A distinctive key is set both ways skiff takes one (the key file written by `skiff cloud key`, then
SKIFF_CLOUD_API_KEY), and the real `skiff` executable runs nearly every command against llama.cpp's
real server on loopback and against servers that misbehave, some of them echoing the key back in
every place a server can put it. A crash path (a key file that is not text, an invalid
configuration, a damaged database) and the TUI in tmux are driven too. Then every file under
SKIFF_HOME, the cache folder, the HOME, XDG and TMPDIR folders the commands ran with, and every
captured stdout, stderr and terminal screen is searched byte-wise, SQLite databases also row by
row and zip/npz members inflated, for the key, a 12-character piece of it, and its URL-encoded,
JSON-escaped, base64, hex and UTF-16 forms. Failure messages never quote the key either, so
pytest's own output stays clean. A probe writes the key into skiff's real databases and into
containers of each kind and shows the search finds it: the test can fail.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import secrets
import shutil
import sqlite3
import stat
import subprocess
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from urllib.parse import quote

import numpy as np
import pytest
from conftest import SKIFF
from leak_search import find_leaks
from servers import FaultServer, LlamaServer, chunk


def canary(label: str) -> str:
    """A key no file could hold by chance; '+' and '/' make its URL-encoded form differ from it."""
    return f"sk-{label}-{secrets.token_hex(12)}+{secrets.token_hex(4)}/Zq"


KEY = canary("canary")  # the endpoint's real key: llama.cpp's server accepts only this one
WRONG_KEY = canary("wrong")  # a refused key
BROKEN_KEY = canary("broken")  # inside a key file that is not text


def hide(text: str, keys: Sequence[str] = (KEY, WRONG_KEY, BROKEN_KEY)) -> str:
    """For failure messages: pytest's own output must not carry the key either."""
    for key in keys:
        text = text.replace(key, "<KEY>")
    return text


# -- a server that repeats the key back wherever it can ----------------------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """/<scenario>/v1/...: the Authorization header it was sent, echoed in an error body, past
    the 200 characters a client shows, in an error event mid-stream, or as the answer's text."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _echo(self) -> tuple[str, str]:
        return self.path.strip("/").split("/")[0], self.headers.get("authorization") or ""

    def _refuse(self, scenario: str, auth: str) -> bool:
        if scenario == "echo401":
            self._json(401, {"error": {"message": f"Invalid API key: {auth}", "key": auth.split()[-1]}})
        elif scenario == "echo_long":  # the key straddles the 200th character of the message
            self._json(401, {"error": {"message": "x" * 170 + auth}})
        elif scenario == "echo500":  # retried, then said
            self._json(500, {"error": {"message": f"upstream rejected {auth}"}})
        elif scenario == "echo_plain":  # not JSON at all
            body = f"Forbidden for {auth}".encode()
            self.send_response(403)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            return False
        return True

    def do_GET(self) -> None:
        scenario, auth = self._echo()
        if not self._refuse(scenario, auth):
            self._json(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self) -> None:
        scenario, auth = self._echo()
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = auth.split()[-1] if auth else ""
        if self._refuse(scenario, auth):
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if scenario == "echo_answer":  # a careless gateway answers with the key, split over pieces
            pieces = ["Your key is ", key[:9], key[9:30], key[30:], " — keep it safe."]
        else:
            pieces = ["The ", "answer "]
        for piece in pieces:
            self._send("data: " + json.dumps(chunk(piece)) + "\n\n")
        if scenario == "echo_event":
            self._send("data: " + json.dumps({"error": {"message": f"overloaded for {auth}"}}) + "\n\n")
        elif scenario == "echo_event_long":
            self._send("data: " + json.dumps({"error": {"message": "y" * 150 + auth}}) + "\n\n")
        else:
            self._send("data: " + json.dumps(chunk(finish="stop")) + "\n\ndata: [DONE]\n\n")
        self._send("")

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        Thread(target=self.serve_forever, daemon=True).start()

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{scenario}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def llama_server():
    from skiff.local.assets import bundled_gguf_path

    server = LlamaServer(bundled_gguf_path(), api_key=KEY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo():
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def faults():
    server = FaultServer()
    yield server
    server.stop()


# -- the probe: the search can fail ----------------------------------------------------------------


def test_the_search_finds_the_key_in_every_form_and_container(tmp_path):
    key = canary("probe")
    root = tmp_path / "root"
    root.mkdir()
    (root / "clean.txt").write_text("nothing to see " * 100)
    assert find_leaks([key], [root], {}, tmp_path / "scratch") == []
    cases = {
        "the key": lambda p: p.write_text(f"log line: Authorization: Bearer {key}\n"),
        "a 12-character piece of the key": lambda p: p.write_text("cut: " + key[:24]),
        "the key URL-encoded": lambda p: p.write_text("GET /cb?token=" + quote(key, safe="")),
        "the key JSON-escaped": lambda p: p.write_text(json.dumps({"k": key}).replace("/", "\\/")),
        "the key in base64": lambda p: p.write_bytes(b"xy" + base64.b64encode(b"zz Bearer " + key.encode())),
        "the key in hex": lambda p: p.write_text("blob " + key.encode().hex()),
        "the key in UTF-16": lambda p: p.write_bytes(("note: " + key).encode("utf-16-le")),
        "the key in UTF-32": lambda p: np.save(p.with_suffix(".npy"), np.array(["note: " + key])),
    }
    for n, (form, write) in enumerate(cases.items()):
        case = tmp_path / f"case{n}"
        case.mkdir()
        write(case / "file")
        found = find_leaks([key], [case], {}, tmp_path / "scratch")
        assert any(f.startswith(form) for f in found), (form, hide(str(found), [key]))
    # Containers: a compressed npz, gzip, and an SQLite value spread over overflow pages.
    container = tmp_path / "containers"
    container.mkdir()
    np.savez_compressed(container / "state.npz", meta=np.array(json.dumps({"key": key})))
    with gzip.open(container / "log.gz", "wt") as handle:
        handle.write(key)
    assert key.encode() not in (container / "state.npz").read_bytes()  # only inflated does it show
    db = sqlite3.connect(container / "big.sqlite3")
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("INSERT INTO t VALUES (?)", ("a" * 4090 + key + "b" * 9000,))  # crosses a page boundary
    db.commit()
    db.close()
    found = find_leaks([key], [container], {}, tmp_path / "scratch")
    assert any("state.npz (member meta.npy)" in f for f in found)
    assert any("log.gz (gunzipped)" in f for f in found)
    assert any("big.sqlite3 (rows)" in f and f.startswith("the key ") for f in found)
    # Captured output is searched too.
    assert find_leaks([key], [], {"stderr of a command": f"error: {key}"}, tmp_path / "scratch")


def test_the_search_finds_a_key_that_skiff_itself_was_given_to_store(skiff_home, tmp_path):
    """The real thing: a key written in a note lands in skiff's index (where it belongs: the person
    put it there); the search finds it in the database skiff wrote."""
    key = canary("typed")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keys.md").write_text(f"# Keys\n\nThe old staging key was {key} until March.\n")
    env = {**os.environ, "SKIFF_N_THREADS": "1"}
    subprocess.run([str(SKIFF), "index", str(notes)], env=env, check=True, capture_output=True, timeout=900)
    found = find_leaks([key], [skiff_home], {}, tmp_path / "scratch")
    assert any("chroma.sqlite3" in f for f in found), hide(str(found), [key])


# -- the client and the answer, against the echoing server (no model: quick) ------------------------


def test_a_key_echoed_back_is_hidden_even_cut_short_or_split_over_the_answer(echo, tmp_path):
    from skiff.cloud import CloudClient, CloudError
    from skiff.assistant.answering import generate_in_cloud
    from skiff.config.settings import load_settings

    key = canary("echoed")
    question = [{"role": "user", "content": "What is six times seven?"}]
    said: list[str] = []
    for scenario in ("echo401", "echo_long", "echo500", "echo_plain"):
        with CloudClient(echo.url(scenario), "m", key, retries=1, backoff_s=0.01) as client:
            said.append(client.check().message)
            with pytest.raises(CloudError) as caught:
                list(client.stream_chat(question))
            said.append(str(caught.value))
    with CloudClient(echo.url("echo_event_long"), "m", key) as client:
        with pytest.raises(CloudError) as caught:
            list(client.stream_chat(question))
        said.append(str(caught.value))
    assert all("[key hidden]" in text for text in said)
    shown: list[str] = []
    settings = load_settings(data_dir=tmp_path, cloud_max_tokens=16)
    with CloudClient(echo.url("echo_answer"), "m", key) as client:
        generated = generate_in_cloud(client, settings, "Hi", [], [], shown.append, None, lambda sent: None)
    hidden = generated.text == "Your key is [key hidden] — keep it safe." == "".join(shown)
    assert hidden
    assert find_leaks([key], [], {f"message {n}": text for n, text in enumerate([*said, *shown])},
                      tmp_path / "scratch") == []


# -- the key never leaks -----------------------------------------------------------------------------


class Commands:
    """The real `skiff` in subprocesses; every output kept for the search."""

    def __init__(self, env: dict) -> None:
        self.env = env
        self.outputs: dict[str, str] = {}

    def __call__(self, *args: str, env: dict | None = None, input: str | None = None, code: int | None = 0):  # noqa: A002
        label = f"{len(self.outputs):02d} skiff {' '.join(args)}"
        result = subprocess.run([str(SKIFF), *args], check=False, env={**self.env, **(env or {})}, input=input,
                                capture_output=True, text=True, timeout=900)
        self.outputs[label + " (stdout)"] = result.stdout
        self.outputs[label + " (stderr)"] = result.stderr
        if code is not None and result.returncode != code:
            raise AssertionError(hide(f"{label} exited {result.returncode}\n{result.stdout[-2000:]}\n"
                                      f"{result.stderr[-3000:]}"))
        return result


def _tui_session(commands: Commands, env: dict, tmp_path: Path) -> None:
    """`skiff` in tmux: ready, one question (the router sends it to the cloud), the decision record
    opened, quit. Every screen is kept. The key reaches tmux through a script outside the searched
    folders, never a command line."""
    from tmux import TmuxSession

    if not shutil.which("tmux"):
        return  # the rest of the search still runs
    script = tmp_path / "tui.sh"
    exports = "".join(f"export {name}={quote_shell(value)}\n" for name, value in env.items()
                      if name.startswith(("SKIFF_", "XDG_", "LC_")) or name in ("HOME", "TMPDIR", "PATH", "LANG"))
    script.write_text(f"#!/bin/sh\n{exports}exec {SKIFF}\n")
    script.chmod(0o700)
    tui = TmuxSession(str(script), {}, width=120, height=40, redact=hide)
    try:
        tui.option("remain-on-exit", "on")
        tui.wait_for(lambda s: "ready" in s, "the model's 'ready'", timeout=600, scrollback=True)
        tui.type("What is six times seven?")
        tui.press("Enter")
        shown = tui.wait_for(lambda s: " tok" in s, "the answer's badge", timeout=600, scrollback=True)
        assert "key hidden" in shown, hide(shown)
        tui.press("C-o")
        time.sleep(1.0)
        tui.screen(scrollback=True)
        tui.press("C-q")
        tui.wait_for(lambda s: "Pane is dead" in s or "ready" not in s, "the exit", timeout=60, scrollback=True)
    finally:
        tui.screen(scrollback=True)
        tui.close()
    for n, shown in enumerate(tui.screens):
        commands.outputs[f"tui screen {n}"] = shown


def quote_shell(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def test_the_key_is_nowhere_skiff_wrote(skiff_home, shared_cache, vault, tmp_path, llama_server, echo, faults):
    home = tmp_path / "user-home"  # HOME, XDG folders and TMPDIR of every command: searched too
    tmpdir = tmp_path / "tmp"
    for folder in (home, tmpdir):
        folder.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmpdir), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local/share"),
           "XDG_STATE_HOME": str(home / ".local/state"), "SKIFF_CLOUD_BASE_URL": llama_server.base_url,
           "SKIFF_CLOUD_MODEL": "smollm2", "SKIFF_MAX_TOKENS": "8", "SKIFF_CLOUD_MAX_TOKENS": "8",
           "SKIFF_N_THREADS": "1", "SKIFF_TOP_K": "1", "SKIFF_LOCAL_PLUS_SHARE": "0", "SKIFF_CLOUD_RETRIES": "1"}
    env.pop("SKIFF_CLOUD_API_KEY", None)
    skiff = Commands(env)
    question = "How do I link to a heading in another note?"

    # 1. The key from the key file that `skiff cloud key` writes (stdin, as a pipe gives it).
    skiff("cloud", "key", input=KEY + "\n")
    key_file = skiff_home / "cloud_api_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.read_text().strip() == KEY
    skiff("index", str(vault))
    skiff("index", "--json")
    assert "reachable; serves smollm2" in skiff("cloud", "check").stdout
    assert json.loads(skiff("cloud", "check", "--json").stdout)["ok"] is True
    skiff("ask", "--route", "local", question)
    cloud = json.loads(skiff("ask", "--route", "cloud", "--json", question).stdout)
    assert cloud["answered_by"] == "cloud", hide(str(cloud["notices"]))
    local, remote = json.loads(skiff("ask", "--compare", "--json", "--no-notes", "Name a prime number.").stdout)
    assert remote["answered_by"] == "cloud"
    skiff("feedback", "good")
    skiff("feedback", "bad", local["id"], "--json")
    skiff("show")
    assert json.loads(skiff("show", "--json", cloud["id"]).stdout)["sent"]["endpoint"] == llama_server.base_url
    skiff("show", remote["id"])
    for args in (("status",), ("status", "--json"), ("config",), ("config", "--json"), ("router", "stats"),
                 ("router", "stats", "--json"), ("router", "calibrate", "--cloud-share", "0.3", "--json"),
                 ("tune", "--status")):
        skiff(*args)
    skiff("cloud", "key", "--remove")
    assert not key_file.exists()

    # 2. The key from SKIFF_CLOUD_API_KEY, against the real server and servers that echo it back.
    with_key = {"SKIFF_CLOUD_API_KEY": KEY}
    settings = json.loads(skiff("config", "--json", env=with_key).stdout)["settings"]
    assert settings["cloud_api_key"] == "********"
    skiff("config", env=with_key)
    assert "reachable" in skiff("cloud", "check", env=with_key).stdout
    streamed = skiff("ask", "--route", "cloud", "--no-notes", "Name a colour.", env=with_key)
    assert "cloud" in streamed.stderr and streamed.stdout.strip()
    wrong = skiff("cloud", "check", "--json", env={"SKIFF_CLOUD_API_KEY": WRONG_KEY}, code=1)
    assert "401" in wrong.stdout, hide(wrong.stdout)
    for scenario in ("echo401", "echo_long", "echo500", "echo_plain"):  # before the answer: /models
        result = skiff("cloud", "check", env={**with_key, "SKIFF_CLOUD_BASE_URL": echo.url(scenario)}, code=1)
        assert "[key hidden]" in result.stdout, hide(f"{scenario}: {result.stdout}")
    echoing = {**with_key, "SKIFF_CLOUD_MODEL": "m"}
    for scenario, args in (("echo_long", ()), ("echo_event_long", ()), ("echo_answer", ()),
                           ("echo_answer", ("--json",))):  # refused; broken mid-answer; the key as the answer
        result = skiff("ask", "--route", "cloud", "--no-notes", *args, "What is six times seven?",
                       env={**echoing, "SKIFF_CLOUD_BASE_URL": echo.url(scenario)})
        said = result.stdout + result.stderr
        assert "[key hidden]" in said, hide(f"{scenario}: {said}")
    for scenario in ("echo_key", "drop"):
        skiff("ask", "--route", "cloud", "--no-notes", "--json", "What is six times seven?",
              env={**with_key, "SKIFF_CLOUD_BASE_URL": faults.url(scenario), "SKIFF_CLOUD_MODEL": "fault-model"})

    # 3. Crash paths: a key file that is not text, an invalid configuration with the key set, a
    # damaged database. Each is said in a line, never a traceback, and never with the key.
    key_file.write_bytes(b"\xff\xfe" + BROKEN_KEY.encode() + b"\n")
    key_file.chmod(0o600)
    result = skiff("cloud", "check", code=1)
    assert "Traceback" not in result.stderr and "not UTF-8" in result.stdout, hide(result.stdout + result.stderr)
    key_file.unlink()
    invalid = {**with_key, "SKIFF_VOTE_MIN_SAMPLES": "9", "SKIFF_VOTE_MAX_SAMPLES": "3"}
    for args in (("config",), ("config", "--json"), ("status",), ("cloud", "check"), ("ask", "Name a colour."),
                 ("router", "stats")):
        result = skiff(*args, env=invalid, code=None)
        assert result.returncode == 2 and "Traceback" not in result.stderr, hide(f"{args}: {result.stderr}")
    result = skiff("cloud", "key", env=invalid, input=KEY + "\n", code=None)
    assert result.returncode == 2 and "Traceback" not in result.stderr and not key_file.exists(), hide(result.stderr)
    skiff("router", "calibrate", "--cloud-share", "1", "--local-plus-share", "0", env=with_key)  # for the TUI
    database = skiff_home / "data" / "skiff.sqlite3"
    database.write_bytes(b"this is not a database " * 400)
    skiff("router", "stats", env=with_key)

    # 4. The TUI in a real terminal, the key in its environment: the router sends its question to a
    # cloud that answers with the key.
    _tui_session(skiff, {**env, **echoing, "SKIFF_CLOUD_BASE_URL": echo.url("echo_answer")}, tmp_path)

    # The search: every file the commands could write, every output.
    roots = [skiff_home, shared_cache, home, tmpdir]
    assert len([p for p in skiff_home.rglob("*") if p.is_file()]) > 10  # the commands did write
    leaks = find_leaks([KEY, WRONG_KEY, BROKEN_KEY], roots, skiff.outputs, tmp_path / "scratch")
    assert leaks == []
