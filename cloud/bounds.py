"""What a cloud server may send, and for how long: the client's limits and deadlines.

`CloudLimits` bound every part of an answer; `BodyReader` reads a body within them, inflating a
compressed one a slice at a time so that a gzip bomb unfolds no further than the limit.
`Deadlines` say which of first-token, total and idle applies now, and `Watchdog` enforces them
while the socket is blocked, where httpx's read timeout cannot (it restarts with every byte).
"""

from __future__ import annotations

import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from skiff.cloud.errors import CloudBadResponse, redact


@dataclass(frozen=True)
class CloudTimeouts:
    connect: float = 5.0
    first_token: float = 60.0
    total: float = 600.0
    idle: float = 60.0  # once text has come: the most seconds without an event (pings do not count)


@dataclass(frozen=True)
class CloudLimits:
    """How much a server may send. Generous to a real server (an OpenAI stream event is a few
    hundred bytes, a few KiB with logprobs), small next to this machine's memory; the stream and
    text limits grow with the max_tokens asked for, since a server should send no more."""

    max_line_bytes: int = 1 << 20  # one line of the event stream (each event is one line of JSON)
    max_event_bytes: int = 1 << 20  # the data lines of one event together
    max_body_bytes: int = 8 << 20  # a whole JSON body: /models, or an answer that was not streamed
    error_body_bytes: int = 64 << 10  # what is read of an error response (200 characters are shown)
    stream_bytes_per_token: int = 8 << 10  # the whole stream: max_tokens x this + 1 MiB
    chars_per_token: int = 64  # the answer's text: max_tokens x this + 1024 characters

    def stream_bytes(self, max_tokens: int) -> int:
        return max(max_tokens, 1) * self.stream_bytes_per_token + (1 << 20)

    def answer_chars(self, max_tokens: int) -> int:
        return max(max_tokens, 1) * self.chars_per_token + 1024


class BodyReader:
    """Reads a response body within a limit; errors name the server (never the key) and the limit."""

    def __init__(self, base_url: str, secret: str | None) -> None:
        self.base_url = base_url
        self._secret = secret

    def chunks(self, response: httpx.Response, limit: int, limit_name: str) -> Iterator[bytes]:
        """The body's bytes as they arrive, inflated here (gzip, deflate) at most 64 KiB at a
        time, so that a small compressed body cannot unfold past `limit` before it is stopped."""
        codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            said = redact(", ".join(codings)[:60], self._secret)
            raise CloudBadResponse(f"{self.base_url} sent a body encoded as {said!r}, "
                                   "which this client does not decode", partial=False)
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32) if codings else None  # gzip or zlib header
        received = 0
        for raw in response.iter_raw():
            for data in self._inflate(inflater, raw) if inflater is not None else (raw,):
                received += len(data)
                if received > limit:
                    raise CloudBadResponse(f"{self.base_url} sent more than {limit} bytes (CloudLimits.{limit_name})",
                                           partial=False)
                yield data

    def _inflate(self, inflater, data: bytes, step: int = 64 << 10) -> Iterator[bytes]:
        """`data` decompressed at most `step` bytes at a time."""
        try:
            while data and not inflater.eof:
                out = inflater.decompress(data, step)
                data = inflater.unconsumed_tail
                if out:
                    yield out
        except zlib.error:
            raise CloudBadResponse(f"{self.base_url} sent a compressed body that does not decompress",
                                   partial=False) from None

    def read(self, response: httpx.Response, limit: int, limit_name: str, truncate: bool = False) -> bytes:
        body = bytearray()
        try:
            for data in self.chunks(response, limit if not truncate else 1 << 62, limit_name):
                body += data[:limit + 1 - len(body)]
                if len(body) > limit:
                    if truncate:
                        return bytes(body[:limit])
                    raise CloudBadResponse(f"{self.base_url} sent a body over {limit} bytes "
                                           f"(CloudLimits.{limit_name})", partial=False)
        except CloudBadResponse:
            if truncate:
                return bytes(body)
            raise
        return bytes(body)


class Deadlines:
    """First token, total and idle, as times on the perf_counter clock. Until the first piece of
    text, the first-token deadline applies; after it, the idle one, from the last event heard."""

    def __init__(self, timeouts: CloudTimeouts, started: float) -> None:
        self.timeouts = timeouts
        self.first_token = started + timeouts.first_token
        self.total = started + timeouts.total
        self.last_heard: float | None = None  # set from the first piece of text on

    def heard(self, now: float) -> None:
        self.last_heard = now

    def current(self) -> float:
        """The earliest deadline that applies now."""
        if self.last_heard is None:
            return min(self.first_token, self.total)
        return min(self.total, self.last_heard + self.timeouts.idle)

    def passed(self, now: float) -> str | None:
        if self.last_heard is None and now >= self.first_token:
            return "first_token"
        if now >= self.total:
            return "total"
        if self.last_heard is not None and now >= self.last_heard + self.timeouts.idle:
            return "idle"
        return None


class Watchdog:
    """Cuts the connection when the deadline passes, whatever the socket is doing. httpx's read
    timeout restarts with every byte, so without this a server that sends its headers, or one
    line, a byte at a time would hold the client for as long as it liked.

    It learns the socket from httpcore's `trace` extension as each connection opens (the client
    keeps no idle connections, so every request opens one), and shuts it down from its own
    thread: the blocked read returns at once, and the client reports the deadline."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._socket: socket.socket | None = None
        self._stopped = False
        self.fired = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="skiff-cloud-watchdog", daemon=True)
        self._thread.start()

    def set(self, deadline: float) -> None:
        with self._cond:
            earlier = deadline < self._deadline
            self._deadline = deadline
            if earlier:
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._socket = None
            self._cond.notify()

    def trace(self, name: str, info: dict) -> None:
        if name.endswith((".connect_tcp.complete", ".connect_unix_socket.complete")):
            stream = info.get("return_value")
            with self._cond:
                self._socket = stream.get_extra_info("socket") if stream is not None else None
                if self.fired:
                    self._cut()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                remaining = self._deadline - time.perf_counter()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self.fired = True
                self._cut()
                return

    def _cut(self) -> None:
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
