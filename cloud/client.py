"""A streaming client for OpenAI-compatible chat endpoints (vLLM, llama.cpp's server, hosted APIs).

What it promises its caller:
- Before the first token, connect errors, 429 and 5xx are retried with exponential backoff
  (Retry-After honoured, capped); anything else fails at once with a `CloudError` that says what
  to fix. Once a token has been shown, nothing is retried: a repeat would duplicate text.
- Four deadlines: connect, first token, total, and idle (once the answer has started, the most
  time without an event; keep-alive comments do not count). They are checked after every read
  from the socket, so a server that pings but never answers still times out; and a watchdog
  cuts the connection when one passes while the socket is blocked, so that headers that never end
  or a line sent a byte at a time (each byte restarting httpx's read timeout) cannot hold on.
- Limits on what a server may send (`CloudLimits`): one line, one event, the whole stream, the
  answer's text, a JSON body; compressed bodies are inflated here a slice at a time, so a gzip
  bomb unfolds no further than the limit. Past a limit: `CloudBadResponse`, with the limit named.
- A stream that breaks after the first token (dropped connection, malformed event, an error
  event, an end without a finish, a deadline or limit passed) raises `CloudStreamBroken`; what
  was yielded stays valid. A server that answers with one JSON body instead of a stream (it
  ignored `stream`) is read whole, within `max_body_bytes`.
- The API key goes only into the Authorization header. Every message this module writes is
  passed through `redact`, so the key never reaches a log, an exception or a terminal.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Self

import httpx
from skiff.cloud.errors import (
    CloudBadResponse,
    CloudError,
    CloudRefused,
    CloudStreamBroken,
    CloudTimeout,
    CloudUnavailable,
    redact,
)
from skiff.cloud.sse import ServerSentEvent, SSEDecoder, SSEError, SSELineTooLong

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/xml", "application/xml"})


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


@dataclass
class CloudStats:
    """Filled in while a stream runs; readable after it ends, however it ended."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False  # False: prompt tokens estimated, completion tokens counted
    attempts: int = 0
    first_token_s: float | None = None
    total_s: float | None = None
    finish_reason: str | None = None

    @property
    def decode_tokens_per_s(self) -> float | None:
        if self.completion_tokens < 2 or self.first_token_s is None or not self.total_s:
            return None
        return (self.completion_tokens - 1) / max(self.total_s - self.first_token_s, 1e-9)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Reachability:
    ok: bool
    base_url: str
    models: list[str] = field(default_factory=list)
    model_found: bool = False
    latency_s: float | None = None
    message: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def estimate_tokens(text: str) -> int:
    """About four characters a token for English under BPE tokenisers: used only when a server
    reports no usage, and labelled as an estimate wherever it is shown."""
    return max(1, round(len(text) / 4))


class CloudClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeouts: CloudTimeouts = CloudTimeouts(),
        retries: int = 2,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        limits: CloudLimits = CloudLimits(),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeouts = timeouts
        self.retries = retries
        self.backoff_s = backoff_s
        self.limits = limits
        self._secret = api_key or ""
        # Compressed bodies are inflated here, within the limits, never by httpx all at once.
        headers = {"Accept-Encoding": "identity"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # The read timeout only bounds silence; the first-token, idle and total deadlines are ours.
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(connect=timeouts.connect, read=timeouts.first_token, write=timeouts.connect,
                                  pool=timeouts.connect),
            # A fresh connection per request: the watchdog learns its socket as it is opened.
            limits=httpx.Limits(max_keepalive_connections=0),
            transport=transport,
            trust_env=False,  # no proxy from the environment may see the key or the notes
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reachability ------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        watchdog = _Watchdog(time.perf_counter() + self.timeouts.first_token)
        try:
            response = self._request_with_retries("GET", "/models", watchdog=watchdog,
                                                  deadline=time.perf_counter() + self.timeouts.first_token)
            try:
                body = self._read_body(response, self.limits.max_body_bytes, "max_body_bytes")
            except httpx.HTTPError as error:
                if watchdog.fired:
                    raise self._first_token_timeout() from None
                raise CloudError(f"{self.base_url}/models broke off its answer ({type(error).__name__})") from None
            finally:
                response.close()
        finally:
            watchdog.stop()
        try:
            payload = json.loads(body)
            return [str(entry["id"]) for entry in payload.get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise CloudError(f"{self.base_url}/models answered something that is not a model list") from None

    def check(self) -> Reachability:
        """Is the endpoint reachable, does it accept the key, and does it serve the model?"""
        started = time.perf_counter()
        try:
            models = self.list_models()
        except CloudError as error:
            return Reachability(False, self.base_url, message=str(error))
        latency = round(time.perf_counter() - started, 4)
        found = self.model in models
        message = (f"reachable; serves {self.model}" if found else
                   f"reachable, but it does not serve {self.model!r}; it serves: {', '.join(models) or 'nothing'}")
        return Reachability(found, self.base_url, models, found, latency, message)

    # -- chat --------------------------------------------------------------------------------

    def stream_chat(
        self,
        messages: Sequence[dict],
        *,
        max_tokens: int = 512,
        temperature: float = 0.0,
        stats: CloudStats | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yields the answer's text pieces as they arrive."""
        stats = stats if stats is not None else CloudStats()
        stats.model = self.model
        body = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},  # servers that do not know it ignore it
        }
        started = time.perf_counter()
        deadlines = _Deadlines(self.timeouts, started)
        answer_limit = self.limits.answer_chars(max_tokens)
        watchdog = _Watchdog(deadlines.current())
        pieces = 0
        shown_chars = 0
        done = False
        try:
            response = self._request_with_retries("POST", "/chat/completions", json=body, stats=stats,
                                                  deadline=deadlines.current(), watchdog=watchdog)
        except BaseException:
            watchdog.stop()
            raise
        try:
            for event in self._answer_events(response, max_tokens):
                now = time.perf_counter()
                passed = deadlines.passed(now)
                if passed:
                    raise self._deadline_error(passed, partial=pieces > 0)
                if should_stop is not None and should_stop():
                    stats.finish_reason = "cancelled"
                    done = True
                    break
                if event is None:  # a read from the socket: only the deadlines above matter
                    continue
                if isinstance(event, _WholeBody):  # the server ignored `stream`: the answer in one body
                    piece, done = self._read_whole(event.data, stats), True
                elif event.data.strip() == "[DONE]":
                    done = True
                    break
                else:
                    piece = self._read_chunk(event, stats, partial=pieces > 0)
                if piece:
                    shown_chars += len(piece)
                    if shown_chars > answer_limit:
                        raise CloudBadResponse(
                            f"{self.base_url} sent more than the {max_tokens} tokens asked for "
                            f"(over {answer_limit} characters, CloudLimits.chars_per_token); "
                            "the answer was cut off", partial=pieces > 0)
                    if stats.first_token_s is None:
                        stats.first_token_s = round(now - started, 4)
                    pieces += 1
                if pieces:  # once text has come, every event is a sign of life (the idle deadline)
                    deadlines.heard(now)
                    watchdog.set(deadlines.current())
                if piece:
                    yield piece
        except SSEError as error:
            limit = "max_line_bytes" if isinstance(error, SSELineTooLong) else "max_event_bytes"
            raise CloudBadResponse(f"{self.base_url} sent {error} (CloudLimits.{limit}); "
                                   "the answer was cut off", partial=pieces > 0) from None
        except CloudBadResponse as error:
            if pieces and not error.partial:  # a body limit passed after text was shown: the text stays
                raise CloudBadResponse(f"{error}; the answer was cut off", partial=True) from None
            raise
        except httpx.HTTPError as error:
            passed = deadlines.passed(time.perf_counter()) if watchdog.fired else None
            if passed:
                raise self._deadline_error(passed, partial=pieces > 0) from None
            if isinstance(error, httpx.TimeoutException):
                if pieces:
                    raise CloudStreamBroken(f"the stream from {self.base_url} stalled ({type(error).__name__})",
                                            partial=True) from None
                raise self._first_token_timeout() from None
            raise CloudStreamBroken(f"the connection to {self.base_url} dropped mid-answer "
                                    f"({type(error).__name__})", partial=pieces > 0) from None
        finally:
            response.close()
            watchdog.stop()
            stats.total_s = round(time.perf_counter() - started, 4)
            if not stats.usage_reported:
                stats.prompt_tokens = estimate_tokens(json.dumps(body["messages"], ensure_ascii=False))
                stats.completion_tokens = pieces
        if not done and stats.finish_reason is None:
            raise CloudStreamBroken(f"the stream from {self.base_url} ended before the answer finished",
                                    partial=pieces > 0)

    def _answer_events(self, response: httpx.Response,
                       max_tokens: int) -> Iterator[ServerSentEvent | _WholeBody | None]:
        """The events of an answer, and None after every read so that the caller's deadlines are
        checked even while a line is still coming. A JSON body comes whole, as a `_WholeBody`."""
        content_type = response.headers.get("content-type", "")
        mime = content_type.split(";")[0].strip().lower()
        if mime == "application/json":
            body = self._read_body(response, self.limits.max_body_bytes, "max_body_bytes")
            yield _WholeBody(body.decode("utf-8", "replace"))
            return
        if mime in PAGE_TYPES:  # other types are read as an event stream: some servers label theirs text/plain
            raise CloudBadResponse(
                f"{self.base_url} answered with Content-Type {redact(content_type[:60], self._secret)!r}, "
                "a page, not an event stream: check that cloud_base_url is the API's address, ending in /v1 "
                "(a proxy's or a login page answers like this)", partial=False)
        decoder = SSEDecoder(self.limits.max_line_bytes, self.limits.max_event_bytes)
        for data in self._body_chunks(response, self.limits.stream_bytes(max_tokens), "stream_bytes_per_token"):
            yield None  # after every read, so the deadlines are checked while no event comes
            yield from decoder.feed(data)
        yield from decoder.close()

    def _deadline_error(self, which: str, partial: bool) -> CloudError:
        if which == "first_token":
            return self._first_token_timeout()
        if which == "idle":
            return CloudStreamBroken(f"nothing new from {self.base_url} for {self.timeouts.idle:g} s "
                                     "(idle timeout); the answer was cut off", partial=partial)
        return CloudStreamBroken(f"the answer took longer than {self.timeouts.total:g} s "
                                 "(total timeout) and was cut off", partial=partial)

    def _first_token_timeout(self) -> CloudTimeout:
        return CloudTimeout(f"no answer from {self.base_url} within {self.timeouts.first_token:g} s "
                            "(first-token timeout)")

    def _read_chunk(self, event: ServerSentEvent, stats: CloudStats, partial: bool) -> str:
        try:
            chunk = json.loads(event.data)
        except (ValueError, RecursionError):
            raise CloudStreamBroken(f"{self.base_url} sent a malformed event", partial=partial) from None
        if not isinstance(chunk, dict):
            raise CloudStreamBroken(f"{self.base_url} sent a malformed event", partial=partial)
        self._raise_reported_error(chunk, event.event == "error", partial)
        self._read_usage(chunk, stats)
        return self._read_choice(chunk, stats, "delta")

    def _read_whole(self, text: str, stats: CloudStats) -> str:
        """A chat.completion body, for a server that answered without streaming."""
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            raise CloudBadResponse(f"{self.base_url} answered with JSON that is not a chat completion",
                                   partial=False)
        self._raise_reported_error(payload, False, partial=False)
        self._read_usage(payload, stats)
        piece = self._read_choice(payload, stats, "message")
        stats.finish_reason = stats.finish_reason or "stop"
        return piece

    def _raise_reported_error(self, chunk: dict, error_event: bool, partial: bool) -> None:
        if error_event or "error" in chunk:
            detail = chunk.get("error")
            detail = detail.get("message", "") if isinstance(detail, dict) else detail
            detail = " ".join(str(detail or "").split())
            raise CloudStreamBroken(redact(f"{self.base_url} reported an error mid-answer: {detail[:200]}",
                                           self._secret), partial=partial)

    @staticmethod
    def _read_usage(chunk: dict, stats: CloudStats) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict) and "completion_tokens" in usage:
            stats.prompt_tokens = _count(usage.get("prompt_tokens"))
            stats.completion_tokens = _count(usage.get("completion_tokens"))
            stats.usage_reported = True

    def _read_choice(self, chunk: dict, stats: CloudStats, key: str) -> str:
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            stats.finish_reason = redact(str(choice["finish_reason"])[:40], self._secret)  # it is recorded
        delta = choice.get(key)
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else ""

    # -- bodies, within the limits -----------------------------------------------------------

    def _body_chunks(self, response: httpx.Response, limit: int, limit_name: str) -> Iterator[bytes]:
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

    def _read_body(self, response: httpx.Response, limit: int, limit_name: str, truncate: bool = False) -> bytes:
        body = bytearray()
        try:
            for data in self._body_chunks(response, limit if not truncate else 1 << 62, limit_name):
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

    # -- requests with retries ---------------------------------------------------------------

    def _request_with_retries(
        self,
        method: str,
        path: str,
        *,
        watchdog: _Watchdog,
        deadline: float,
        json: dict | None = None,
        stats: CloudStats | None = None,
    ) -> httpx.Response:
        """The response, its headers read and its body not yet: the caller reads and closes it."""
        url = f"{self.base_url}{path}"
        last_problem = ""
        for attempt in range(self.retries + 1):
            if stats is not None:
                stats.attempts = attempt + 1
            try:
                request = self._http.build_request(method, url, json=json, extensions={"trace": watchdog.trace})
                response = self._http.send(request, stream=True)
            except httpx.TimeoutException as error:
                if isinstance(error, httpx.ConnectTimeout) and not watchdog.fired:
                    last_problem = f"could not connect to {self.base_url} within {self.timeouts.connect:g} s"
                else:
                    # The server took the request and said nothing: retrying would double the wait.
                    raise self._first_token_timeout() from None
            except httpx.HTTPError as error:
                if watchdog.fired:  # cut at the deadline: headers that never ended
                    raise self._first_token_timeout() from None
                if isinstance(error, httpx.ConnectError):
                    last_problem = f"could not reach {self.base_url} ({type(error).__name__})"
                else:
                    last_problem = f"{self.base_url} broke off before answering ({type(error).__name__})"
            else:
                if response.status_code < 400:
                    return response
                try:
                    detail = self._error_detail(response)
                finally:
                    response.close()
                if watchdog.fired:
                    raise self._first_token_timeout()
                if response.status_code not in RETRY_STATUSES:
                    raise CloudRefused.for_status(response.status_code, self.base_url, self.model, detail)
                last_problem = f"{self.base_url} answered {response.status_code}{': ' + detail if detail else ''}"
                wait = self._retry_after(response)
                if wait is not None and attempt < self.retries:
                    if time.perf_counter() + wait > deadline:
                        break
                    time.sleep(wait)
                    continue
            if attempt < self.retries:
                wait = self.backoff_s * (2**attempt)
                if time.perf_counter() + wait > deadline:
                    break
                time.sleep(wait)
        tries = f" after {stats.attempts if stats else self.retries + 1} tries" if self.retries else ""
        raise CloudUnavailable(redact(last_problem + tries, self._secret))

    def _error_detail(self, response: httpx.Response) -> str:
        try:
            raw = self._read_body(response, self.limits.error_body_bytes, "error_body_bytes", truncate=True)
        except (httpx.HTTPError, CloudError):
            return ""
        text = raw.decode("utf-8", "replace")
        try:
            payload = json.loads(text)
            detail = payload.get("error", payload) if isinstance(payload, dict) else payload
            if isinstance(detail, dict):
                detail = detail.get("message") or detail.get("detail") or ""
            text = str(detail)
        except (ValueError, RecursionError):
            pass
        return redact(" ".join(str(text).split())[:200], self._secret)

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after")
        try:
            wait = float(value) if value is not None else None
        except ValueError:
            return None
        if wait is None or math.isnan(wait):
            return None
        return min(max(wait, 0.0), MAX_RETRY_AFTER_S)


def _count(value) -> int:
    """A token count from a server's usage report; anything that is not a count is 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, int(value))


@dataclass(frozen=True)
class _WholeBody:
    data: str


class _Deadlines:
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


class _Watchdog:
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
