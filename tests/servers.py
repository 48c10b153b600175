"""Real HTTP servers on loopback for the cloud tests.

- `LlamaServer`: llama-cpp-python's own OpenAI-compatible server (its `server` extra) serving the
  bundled SmolLM2 GGUF, with an API key: the real thing skiff talks to.
- `FaultServer`: a small server of our own that misbehaves on purpose, one scenario per URL
  prefix (http://127.0.0.1:PORT/<scenario>/v1): delays, 500, 429 then success, a connection
  dropped mid-stream, malformed events, a first token that never comes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    def __init__(self, gguf: Path, api_key: str, alias: str = "smollm2") -> None:
        self.port = free_port()
        self.api_key = api_key
        self.alias = alias
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "API_KEY": api_key}  # from the environment: never on a command line
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "4096", "--n_threads", "2"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base_url}/models", headers={"Authorization": f"Bearer {api_key}"},
                             timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("llama_cpp.server did not come up within 120 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def chunk(content: str | None = None, finish: str | None = None) -> dict:
    delta = {"content": content} if content is not None else {}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "FaultServer"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _scenario(self) -> str:
        return self.path.strip("/").split("/")[0]

    def do_GET(self) -> None:
        scenario = self._scenario()
        self.server.record(scenario, self.headers)
        if scenario == "refuse401":
            return self._json(401, {"error": {"message": "Invalid API key"}})
        self._json(200, {"object": "list", "data": [{"id": "fault-model", "object": "model"}]})

    def do_POST(self) -> None:
        scenario = self._scenario()
        attempt = self.server.record(scenario, self.headers)
        length = int(self.headers.get("content-length") or 0)
        self.server.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
        if scenario in ("refuse401", "refuse403", "refuse404"):
            return self._json(int(scenario[-3:]), {"error": {"message": f"nope {scenario}"}})
        if scenario == "echo_key":  # a careless server that repeats the header it was sent
            return self._json(400, {"error": {"message": f"bad header {self.headers.get('authorization')}"}})
        if scenario == "always500":
            return self._json(500, {"error": {"message": "internal"}})
        if scenario == "429_then_ok" and attempt == 1:
            return self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if scenario == "hang":
            time.sleep(self.server.hang_s)
            return self._json(500, {"error": {"message": "too late"}})
        self._start_stream()
        if scenario == "pings":  # keep-alive comments, never a token
            deadline = time.monotonic() + self.server.hang_s
            while time.monotonic() < deadline:
                if not self._send(": ping\n\n"):
                    return
                time.sleep(0.1)
            return self._end()
        if scenario == "slow_first":
            time.sleep(self.server.hang_s)
        pieces = ["The ", "answer ", "is ", "42."]
        for n, piece in enumerate(pieces):
            if scenario in ("drop", "malformed", "error_event", "no_done") and n == 2:
                if scenario == "drop":
                    # Half a chunk, then the socket closes: a truncated chunked body.
                    self.wfile.write(b"40\r\ndata: {\"cho")
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if scenario == "malformed":
                    self._send("data: {not json\n\n")
                if scenario == "error_event":
                    self._send("data: " + json.dumps({"error": {"message": "model overloaded"}}) + "\n\n")
                return self._end()
            self._send("data: " + json.dumps(chunk(piece)) + "\n\n")
        self._send("data: " + json.dumps(chunk(finish="stop")) + "\n\n")
        if scenario != "no_done":
            self._send("data: [DONE]\n\n")
        self._end()

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send(self, text: str) -> bool:
        data = text.encode()
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _end(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hang_s = 3.0
        self.requests: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def handle_error(self, request, client_address) -> None:
        pass  # clients that hang up on purpose (timeouts, cancels) are part of the tests

    def record(self, scenario: str, headers) -> int:
        with self._lock:
            self.requests[scenario] += 1
            self.auth_headers.append(headers.get("authorization") or "")
            return self.requests[scenario]

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{scenario}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
