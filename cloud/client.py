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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Self

import httpx
from skiff.cloud.answers import AnswerReader, CloudStats
from skiff.cloud.bounds import BodyReader, CloudLimits, CloudTimeouts, Deadlines, Watchdog
from skiff.cloud.errors import (
    CloudBadResponse,
    CloudError,
    CloudRefused,
    CloudStreamBroken,
    CloudTimeout,
    CloudUnavailable,
    KeyFilter,
    redact,
)
from skiff.cloud.sse import ServerSentEvent, SSEDecoder, SSEError, SSELineTooLong

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml", "text/xml", "application/xml"})


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
        self._bodies = BodyReader(self.base_url, self._secret)
        self._answers = AnswerReader(self.base_url, self._secret)
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
        watchdog = Watchdog(time.perf_counter() + self.timeouts.first_token)
        try:
            response = self._request_with_retries("GET", "/models", watchdog=watchdog,
                                                  deadline=time.perf_counter() + self.timeouts.first_token)
            try:
                body = self._bodies.read(response, self.limits.max_body_bytes, "max_body_bytes")
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
        """Yields the answer's text pieces as they arrive, with this client's API key hidden in them."""
        key_filter = KeyFilter(self._secret)
        for piece in self._stream_pieces(messages, max_tokens, temperature, stats, should_stop):
            if shown := key_filter.feed(piece):
                yield shown
        if rest := key_filter.flush():
            yield rest

    def _stream_pieces(self, messages: Sequence[dict], max_tokens: int, temperature: float,
                       stats: CloudStats | None, should_stop: Callable[[], bool] | None) -> Iterator[str]:
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
        deadlines = Deadlines(self.timeouts, started)
        answer_limit = self.limits.answer_chars(max_tokens)
        watchdog = Watchdog(deadlines.current())
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
                    piece, done = self._answers.whole(event.data, stats), True
                elif event.data.strip() == "[DONE]":
                    done = True
                    break
                else:
                    piece = self._answers.chunk(event, stats, partial=pieces > 0)
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
            body = self._bodies.read(response, self.limits.max_body_bytes, "max_body_bytes")
            yield _WholeBody(body.decode("utf-8", "replace"))
            return
        if mime in PAGE_TYPES:  # other types are read as an event stream: some servers label theirs text/plain
            raise CloudBadResponse(
                f"{self.base_url} answered with Content-Type {redact(content_type[:60], self._secret)!r}, "
                "a page, not an event stream: check that cloud_base_url is the API's address, ending in /v1 "
                "(a proxy's or a login page answers like this)", partial=False)
        decoder = SSEDecoder(self.limits.max_line_bytes, self.limits.max_event_bytes)
        for data in self._bodies.chunks(response, self.limits.stream_bytes(max_tokens), "stream_bytes_per_token"):
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

    # -- requests with retries ---------------------------------------------------------------

    def _request_with_retries(
        self,
        method: str,
        path: str,
        *,
        watchdog: Watchdog,
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
            raw = self._bodies.read(response, self.limits.error_body_bytes, "error_body_bytes", truncate=True)
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


@dataclass(frozen=True)
class _WholeBody:
    data: str
