"""Real HTTP servers on loopback for the cloud tests.

- `LlamaServer`: llama-cpp-python's own OpenAI-compatible server (its `server` extra) serving the
  bundled SmolLM2 GGUF, with an API key: the real thing skiff talks to.
- `FaultServer`: a small server of our own that misbehaves on purpose, one scenario per URL
  prefix (http://127.0.0.1:PORT/<scenario>/v1): delays, 500, 429 then success, a connection
  dropped mid-stream, malformed events, a first token that never comes; and the hostile ones
  (`HOSTILE`): drips (a byte, a token, a ping, a header every `drip_s`), endless streams,
  huge lines, events and bodies, headers that never end, the wrong content type, gzip bombs.
  The endless ones stop when the client hangs up, or after `forever_s` at the latest.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from functools import cache
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
        # Open for the server's life, closed by stop().
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llama-server-{self.port}.log", "w")  # noqa: SIM115
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


def event(content: str | None = None, finish: str | None = None) -> str:
    return "data: " + json.dumps(chunk(content, finish)) + "\n\n"


HUGE_BYTES = 256 << 20  # the size of the huge_* lines and bodies, written lazily as the client reads
BOMB_BYTES = 64 << 20  # what a gzip bomb inflates to; it travels as about 64 KiB


@cache
def gzip_bomb(kind: str) -> bytes:
    """A gzip body that inflates to BOMB_BYTES: of blank lines (valid SSE that dispatches nothing),
    of one line that never ends, or of one JSON string. Built from one compressed MiB repeated
    (a full flush makes each repeat the same bytes), with the true CRC and length at the end."""
    head, fill = {"lines": (b"", b"\n"), "line": (b"data: ", b"a"),
                  "json": (b'{"choices": [{"message": {"content": "', b"a")}[kind]
    block = fill * (1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = packer.compress(head + block) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    last = packer.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head + block)
    for _ in range((BOMB_BYTES >> 20) - 1):
        crc = zlib.crc32(block, crc)
    size = len(head) + BOMB_BYTES
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return b"".join([gzip_header, first, again * ((BOMB_BYTES >> 20) - 1), last,
                     struct.pack("<II", crc, size & 0xFFFFFFFF)])


WHOLE_ANSWER = {"object": "chat.completion", "model": "fault-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 42."},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}}

# The first scenarios (tests/test_cloud.py), and the hostile ones, each to be answered in bounded
# time and memory (tests/faults/). "fuzz" serves whatever a test put in FaultServer.fuzz_body.
CLASSIC = ("ok", "429_then_ok", "always500", "refuse401", "refuse403", "refuse404", "echo_key", "hang", "pings",
           "slow_first", "drop", "malformed", "error_event", "no_done", "empty")
HOSTILE = (
    "drip_head",  # one byte of a line every drip_s, before any token; the line never ends
    "drip_line",  # a token, then one byte of a line every drip_s, forever
    "drip_tokens",  # a valid token every drip_s, forever
    "drip_pings",  # a token, then a keep-alive comment every drip_s, forever
    "drip_headers",  # a status line, then one header line every drip_s, forever
    "endless_headers",  # a status line, then header lines as fast as they go, forever
    "endless_tokens",  # valid tokens as fast as they go, forever (max_tokens ignored)
    "endless_pings",  # keep-alive comments of 1 KB (padding against proxy buffering) as fast as they go, forever
    "huge_line",  # a token, then one 256 MiB line: "data: aaaa..." with no line ending
    "huge_event",  # a token, then data lines of 1 KB forever, never the blank line that ends the event
    "huge_json",  # a non-streamed JSON answer of 256 MiB (Content-Length set); on GET, a model list
    "huge_error",  # 500 with a 256 MiB JSON body
    "wrong_type",  # 200 with text/html: a proxy's login page
    "json_answer",  # 200 with one chat.completion JSON body: the server ignored `stream`
    "gzip_ok",  # a normal stream, gzip-compressed
    "gzip_bomb",  # gzip: 64 KiB that inflate to 64 MiB of blank lines
    "gzip_bomb_line",  # gzip: inflates to one 64 MiB line
    "gzip_json_bomb",  # gzip: a JSON answer that inflates to 64 MiB
    "unknown_encoding",  # Content-Encoding: br (never asked for)
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _scenario(self) -> str:
        return self.path.strip("/").split("/")[0]

    def do_GET(self) -> None:
        scenario = self._scenario()
        self.server.record(scenario, self.headers)
        if scenario == "refuse401":
            return self._json(401, {"error": {"message": "Invalid API key"}})
        if self._headers_forever(scenario):
            return None
        if scenario == "huge_json":  # a model list of 256 MiB
            return self._huge_body(200, b'{"object": "list", "data": [{"id": "', b"m" * 65536)
        self._json(200, {"object": "list", "data": [{"id": "fault-model", "object": "model"}]})
        return None

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
        if scenario == "429_then_ok" and attempt % 2 == 1:  # every first try of a client
            return self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if scenario == "hang":
            time.sleep(self.server.hang_s)
            return self._json(500, {"error": {"message": "too late"}})
        if scenario in HOSTILE or scenario == "fuzz":
            return self._hostile(scenario)
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
        if scenario == "empty":  # a model that stops at once: a well-formed stream with no text
            pieces = ["", "  "]
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

    def _hostile(self, scenario: str) -> None:  # one branch a scenario
        server = self.server
        forever = time.monotonic() + server.forever_s
        if self._headers_forever(scenario):
            return None
        if scenario == "huge_json":
            return self._huge_body(200, b'{"choices": [{"message": {"content": "', b"a" * 65536)
        if scenario == "huge_error":
            return self._huge_body(500, b'{"error": {"message": "', b"e" * 65536)
        if scenario == "wrong_type":
            return self._raw(200, b"<html><body>Please log in</body></html>", "text/html; charset=utf-8")
        if scenario == "json_answer":
            return self._json(200, WHOLE_ANSWER)
        if scenario == "gzip_ok":
            body = "".join([event("The "), event("answer "), event("is "), event("42."), event(finish="stop"),
                            "data: [DONE]\n\n"])
            return self._raw(200, gzip.compress(body.encode()), "text/event-stream", {"Content-Encoding": "gzip"})
        if scenario in ("gzip_bomb", "gzip_bomb_line", "gzip_json_bomb"):
            kind = {"gzip_bomb": "lines", "gzip_bomb_line": "line", "gzip_json_bomb": "json"}[scenario]
            content_type = "application/json" if kind == "json" else "text/event-stream"
            return self._raw(200, gzip_bomb(kind), content_type, {"Content-Encoding": "gzip"})
        if scenario == "unknown_encoding":
            return self._raw(200, os.urandom(4096), "text/event-stream", {"Content-Encoding": "br"})
        self._start_stream()
        if scenario == "fuzz":  # the bytes a test put in fuzz_body, in the pieces it chose
            for piece in server.fuzz_body:
                if not self._send_bytes(piece):
                    return None
            return self._end()
        if scenario in ("drip_line", "drip_pings", "huge_line", "huge_event"):
            self._send(event("The ") + event("answer "))
        if scenario in ("drip_head", "drip_line"):
            line = ("data: " + json.dumps(chunk("never " * 10_000))).encode()
            for n in range(len(line)):
                if time.monotonic() > forever or not self._send_bytes(line[n:n + 1]):
                    return None
                time.sleep(server.drip_s)
        repeat = {"drip_tokens": event("tok "), "drip_pings": ": ping\n\n",
                  "endless_tokens": event("tok ") * 500, "endless_pings": (": " + "k" * 1000 + "\n\n") * 64,
                  "huge_event": ("data: " + "d" * 1000 + "\n") * 64}.get(scenario)
        if scenario == "huge_line":
            if not self._send("data: "):
                return None
            repeat = "a" * 65536
            forever = time.monotonic() + server.forever_s
            for _ in range(HUGE_BYTES // len(repeat)):
                if not self._send(repeat) or time.monotonic() > forever:
                    return None
            return self._end()
        while repeat is not None and time.monotonic() < forever:
            if not self._send(repeat):
                return None
            if scenario.startswith("drip_"):
                time.sleep(server.drip_s)
        return self._end()

    def _headers_forever(self, scenario: str) -> bool:
        if scenario not in ("drip_headers", "endless_headers"):
            return False
        started = time.monotonic()
        forever = started + self.server.forever_s
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
            n = 0
            while time.monotonic() < forever:
                if scenario == "drip_headers":
                    self.wfile.write(f"X-Drip-{n}: {n}\r\n".encode())
                    time.sleep(self.server.drip_s)
                else:
                    self.wfile.write(b"".join(f"X-Pad-{n}-{k}: {'p' * 100}\r\n".encode() for k in range(100)))
                n += 1
        except OSError:
            pass
        self.server.header_spans.append(time.monotonic() - started)  # until the client hung up
        return True

    def _huge_body(self, status: int, head: bytes, fill: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(head) + HUGE_BYTES))
        self.end_headers()
        forever = time.monotonic() + self.server.forever_s
        try:
            self.wfile.write(head)
            for _ in range(HUGE_BYTES // len(fill)):
                if time.monotonic() > forever:
                    return
                self.wfile.write(fill)
        except OSError:
            pass

    def _raw(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

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
        return self._send_bytes(text.encode())

    def _send_bytes(self, data: bytes) -> bool:
        if not data:
            return True  # an empty chunk would end a chunked body
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
        self.drip_s = 0.3  # the pause between the drips of the drip_* scenarios
        self.forever_s = 120.0  # the longest an endless scenario goes on if the client never hangs up
        self.fuzz_body: list[bytes] = []  # the "fuzz" scenario's stream, piece by piece
        self.header_spans: list[float] = []  # seconds each drip_headers/endless_headers answer lasted
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
