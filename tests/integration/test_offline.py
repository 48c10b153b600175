"""Offline by construction: indexing and answering open no socket beyond loopback.

Every connect()/sendto()/sendmsg() system call of skiff and all its threads and children is
traced with strace, so native code (chromadb's Rust core, onnxruntime, llama.cpp) is covered, not
only Python's socket module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import SKIFF

_INET = re.compile(r'sa_family=AF_INET6?, .*?(?:inet_addr|inet_pton\(AF_INET6?, )\("([^"]+)"\)')
LOOPBACK = re.compile(r"^(127\.|::1$|::ffff:127\.)")


def outbound(trace: str) -> list[str]:
    bad = []
    for line in trace.splitlines():
        if "AF_INET" not in line:
            continue  # AF_UNIX / AF_NETLINK stay on the machine
        match = _INET.search(line)
        if match is None or not LOOPBACK.match(match.group(1)):
            bad.append(line.strip())
    return bad


def test_trace_parser_flags_a_real_outbound_connect(tmp_path):
    """The guard itself must be able to fail: a connect to a public address is caught."""
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    log = tmp_path / "trace"
    code = "import socket; s=socket.socket(); s.settimeout(0.2)\ntry: s.connect(('192.0.2.1', 9))\nexcept OSError: pass"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(log), "python3", "-c", code],
                   check=True, timeout=60)
    assert any("192.0.2.1" in line for line in outbound(log.read_text()))


@pytest.mark.parametrize("command", [("index",), ("ask",)])
def test_offline_opens_no_socket_beyond_loopback(skiff_home, vault, tmp_path, command):
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    env = {**os.environ, "SKIFF_OFFLINE": "true"}
    if command == ("index",):
        # A fresh cache makes this run long (it exports the embedder), long enough for a library's
        # background telemetry timer to fire: onnxruntime's did, ~10 s in, before it was disabled.
        env["SKIFF_CACHE_DIR"] = str(tmp_path / "fresh-cache")
    if command == ("ask",):
        subprocess.run([str(SKIFF), "index", str(vault)], env=env, check=True, capture_output=True, timeout=300)
        args = ["ask", "--max-tokens", "16", "How do I link to a heading?"]
    else:
        args = ["index", str(vault)]
    log = tmp_path / "trace"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log), str(SKIFF), *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert outbound(log.read_text()) == []


# A public TEST-NET-3 address (RFC 5737): nothing answers there, so an attempt shows as a connect().
UNROUTABLE_CLOUD = "http://203.0.113.7:8000/v1"


@pytest.mark.parametrize("offline", [True, False])
def test_offline_mode_keeps_a_cloud_question_on_the_machine(skiff_home, tmp_path, offline):
    """A question forced to the cloud, with an endpoint configured: offline, no socket leaves the
    machine and the answer says so; online, the same command does try the endpoint (the guard
    can see the cloud path, so the offline result means something)."""
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    env = {**os.environ, "SKIFF_OFFLINE": str(offline).lower(), "SKIFF_CLOUD_BASE_URL": UNROUTABLE_CLOUD,
           "SKIFF_CLOUD_MODEL": "m", "SKIFF_CLOUD_CONNECT_TIMEOUT_S": "0.5", "SKIFF_CLOUD_RETRIES": "0"}
    log = tmp_path / "trace"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log), str(SKIFF),
         "ask", "--route", "cloud", "--no-notes", "--max-tokens", "8", "What is six times seven?"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "answered locally" in result.stderr
    attempts = [line for line in outbound(log.read_text()) if "203.0.113.7" in line]
    if offline:
        assert outbound(log.read_text()) == [] and "offline mode" in result.stderr
    else:
        assert attempts


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("config",), ("config", "--json"),
                                     ("cloud", "check"), ("cloud", "check", "--online")])
def test_status_config_and_check_offline_open_no_socket_beyond_loopback(skiff_home, tmp_path, command):
    """With a cloud endpoint configured, offline: `skiff status`, `skiff config` and `skiff cloud
    check` say what is configured and contact nothing. The control (check, online) does try the
    endpoint, so the guard sees that path."""
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    online = command[-1] == "--online"
    env = {**os.environ, "SKIFF_OFFLINE": str(not online).lower(), "SKIFF_CLOUD_BASE_URL": UNROUTABLE_CLOUD,
           "SKIFF_CLOUD_MODEL": "m", "SKIFF_CLOUD_CONNECT_TIMEOUT_S": "0.5", "SKIFF_CLOUD_RETRIES": "0"}
    log = tmp_path / "trace"
    result = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log), str(SKIFF),
         *command[:2 if online else None]],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    expected = 1 if command[0] == "cloud" else 0  # an endpoint not reached is not ok
    assert result.returncode == expected, result.stderr[-2000:]
    if online:
        assert any("203.0.113.7" in line for line in outbound(log.read_text()))
    else:
        assert outbound(log.read_text()) == []
        if command[0] == "cloud":
            assert "offline" in result.stdout
        else:
            assert "203.0.113.7" in result.stdout  # it did say which endpoint is configured


def test_the_tui_starting_offline_opens_no_socket_beyond_loopback(skiff_home, tmp_path):
    """`skiff` (the TUI) in a real terminal under strace, offline with a cloud endpoint configured:
    painted, the index opened and the model loaded ('ready'), then quit; no connect() of any of
    its threads leaves loopback."""
    if not shutil.which("strace") or not shutil.which("tmux"):
        pytest.skip("strace or tmux not installed")
    import time

    log = tmp_path / "trace"
    settings = {"SKIFF_HOME": os.environ["SKIFF_HOME"], "SKIFF_CACHE_DIR": os.environ["SKIFF_CACHE_DIR"],
                "SKIFF_MODEL_PATH": os.environ["SKIFF_MODEL_PATH"],
                "SKIFF_OFFLINE": "true", "SKIFF_CLOUD_BASE_URL": UNROUTABLE_CLOUD, "SKIFF_CLOUD_MODEL": "m"}
    env_args = [arg for name, value in settings.items() for arg in ("-e", f"{name}={value}")]
    session = f"skiff-offline-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "32", *env_args, "strace", "-f",
                    "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log), str(SKIFF)], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                              check=False).stdout

    try:
        deadline = time.monotonic() + 300
        while not ("Chats" in screen() and "ready" in screen()):
            assert time.monotonic() < deadline, f"the TUI never became ready:\n{screen()}"
            time.sleep(0.3)
        subprocess.run(["tmux", "send-keys", "-t", session, "C-q"], check=True)
        deadline = time.monotonic() + 60
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True,
                             check=False).returncode == 0:
            assert time.monotonic() < deadline, "skiff did not quit on ctrl+q"
            time.sleep(0.3)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
    trace = log.read_text()
    assert trace.strip()  # strace followed it: at least the local sockets it opened
    assert outbound(trace) == []


def test_serve_offline_opens_no_socket_beyond_loopback(skiff_home, vault, tmp_path):
    """`skiff serve` under strace, offline with a cloud endpoint configured: a routed question and
    one asked of the cloud model are answered on the machine, and no thread of it connects beyond
    loopback; ctrl+c then stops it."""
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    import signal
    import time

    from pathlib import Path

    import httpx
    from servers import free_port

    env = {**os.environ, "SKIFF_OFFLINE": "true", "SKIFF_CLOUD_BASE_URL": UNROUTABLE_CLOUD, "SKIFF_CLOUD_MODEL": "m",
           "SKIFF_MAX_TOKENS": "8"}
    subprocess.run([str(SKIFF), "index", str(vault)], env=env, check=True, capture_output=True, timeout=300)
    port, log = free_port(), tmp_path / "trace"
    server = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log),
                               str(SKIFF), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        key = (skiff_home / "serve_api_key").read_text().strip()
        for model in ("skiff", "skiff-cloud"):
            reply = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=120,
                               json={"model": model, "messages": [{"role": "user", "content": "How do I link notes?"}]})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["skiff"]["answered_by"] == "local"
    finally:
        # strace itself would detach on SIGINT and leave skiff running: ctrl+c goes to skiff.
        for child in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split():
            os.kill(int(child), signal.SIGINT)
        server.communicate(timeout=60)
    assert server.returncode == 0
    assert outbound(log.read_text()) == []
