"""A streaming client for OpenAI-compatible chat endpoints (vLLM, llama.cpp's server, hosted APIs).

What it promises its caller:
- Before the first token, connect errors, 429 and 5xx are retried with exponential backoff
  (Retry-After honoured, capped); anything else fails at once with a `CloudError` that says what
  to fix. Once a token has been shown, nothing is retried: a repeat would duplicate text.
- Three deadlines: connect, first token, total. They are checked on every line the server
  sends, keep-alive comments included, so a server that pings but never answers still times out.
- A stream that breaks after the first token (dropped connection, malformed event, an error
  event, an end without a finish) raises `CloudStreamBroken`; what was yielded stays valid.
- The API key goes only into the Authorization header. Every message this module writes is
  passed through `redact`, so the key never reaches a log, an exception or a terminal.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import httpx

from skiff.cloud.errors import CloudError, CloudRefused, CloudStreamBroken, CloudTimeout, CloudUnavailable, redact
from skiff.cloud.sse import ServerSentEvent, iter_events

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0


@dataclass(frozen=True)
class CloudTimeouts:
    connect: float = 5.0
    first_token: float = 60.0
    total: float = 600.0


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeouts = timeouts
        self.retries = retries
        self.backoff_s = backoff_s
        self._secret = api_key or ""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The read timeout only bounds silence; the first-token and total deadlines are ours.
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(connect=timeouts.connect, read=timeouts.first_token, write=timeouts.connect,
                                  pool=timeouts.connect),
            transport=transport,
            trust_env=False,  # no proxy from the environment may see the key or the notes
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "CloudClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reachability ------------------------------------------------------------------------

    def list_models(self) -> list[str]:
        response = self._request_with_retries("GET", "/models")
        try:
            payload = response.json()
            return [str(entry["id"]) for entry in payload.get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CloudError(f"{self.base_url}/models answered something that is not a model list") from error

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
        first_token_deadline = started + self.timeouts.first_token
        total_deadline = started + self.timeouts.total
        response = self._request_with_retries("POST", "/chat/completions", json=body, stream=True, stats=stats,
                                              deadline=first_token_deadline)
        pieces: list[str] = []
        done = False
        try:
            events = iter_events(response.iter_lines())
            for event in events:
                now = time.perf_counter()
                if stats.first_token_s is None and now > first_token_deadline:
                    raise self._first_token_timeout()
                if now > total_deadline:
                    raise CloudStreamBroken(f"the answer took longer than {self.timeouts.total:g} s "
                                            "(total timeout) and was cut off", partial=bool(pieces))
                if should_stop is not None and should_stop():
                    stats.finish_reason = "cancelled"
                    done = True
                    break
                if event is None:  # a keep-alive comment: only the deadlines above matter
                    continue
                if event.data.strip() == "[DONE]":
                    done = True
                    break
                piece = self._read_chunk(event, stats, partial=bool(pieces))
                if piece:
                    if stats.first_token_s is None:
                        stats.first_token_s = round(time.perf_counter() - started, 4)
                    pieces.append(piece)
                    yield piece
        except httpx.TimeoutException as error:
            if pieces:
                raise CloudStreamBroken(f"the stream from {self.base_url} stalled ({type(error).__name__})",
                                        partial=True) from None
            raise self._first_token_timeout() from None
        except httpx.HTTPError as error:
            raise CloudStreamBroken(f"the connection to {self.base_url} dropped mid-answer "
                                    f"({type(error).__name__})", partial=bool(pieces)) from None
        finally:
            response.close()
            stats.total_s = round(time.perf_counter() - started, 4)
            if not stats.usage_reported:
                stats.prompt_tokens = estimate_tokens(json.dumps(body["messages"], ensure_ascii=False))
                stats.completion_tokens = len(pieces)
        if not done and stats.finish_reason is None:
            raise CloudStreamBroken(f"the stream from {self.base_url} ended before the answer finished",
                                    partial=bool(pieces))

    def _first_token_timeout(self) -> CloudTimeout:
        return CloudTimeout(f"no answer from {self.base_url} within {self.timeouts.first_token:g} s "
                            "(first-token timeout)")

    def _read_chunk(self, event: ServerSentEvent, stats: CloudStats, partial: bool) -> str:
        try:
            chunk = json.loads(event.data)
        except ValueError:
            raise CloudStreamBroken(f"{self.base_url} sent a malformed event", partial=partial) from None
        if not isinstance(chunk, dict):
            raise CloudStreamBroken(f"{self.base_url} sent a malformed event", partial=partial)
        if event.event == "error" or "error" in chunk:
            detail = chunk.get("error")
            detail = detail.get("message", "") if isinstance(detail, dict) else str(detail or "")
            raise CloudStreamBroken(redact(f"{self.base_url} reported an error mid-answer: {detail[:200]}",
                                           self._secret), partial=partial)
        usage = chunk.get("usage")
        if isinstance(usage, dict) and "completion_tokens" in usage:
            stats.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            stats.completion_tokens = int(usage.get("completion_tokens") or 0)
            stats.usage_reported = True
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        choice = choices[0] if isinstance(choices[0], dict) else {}
        if choice.get("finish_reason"):
            stats.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else ""

    # -- requests with retries ---------------------------------------------------------------

    def _request_with_retries(
        self,
        method: str,
        path: str,
        *,
        json: dict | None = None,
        stream: bool = False,
        stats: CloudStats | None = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        last_problem = ""
        for attempt in range(self.retries + 1):
            if stats is not None:
                stats.attempts = attempt + 1
            try:
                request = self._http.build_request(method, url, json=json)
                response = self._http.send(request, stream=stream)
            except httpx.TimeoutException as error:
                if isinstance(error, httpx.ConnectTimeout):
                    last_problem = f"could not connect to {self.base_url} within {self.timeouts.connect:g} s"
                else:
                    # The server took the request and said nothing: retrying would double the wait.
                    raise self._first_token_timeout() from None
            except httpx.HTTPError as error:
                last_problem = f"could not reach {self.base_url} ({type(error).__name__})"
            else:
                if response.status_code < 400:
                    return response
                detail = self._error_detail(response)
                response.close()
                if response.status_code not in RETRY_STATUSES:
                    raise CloudRefused.for_status(response.status_code, self.base_url, self.model, detail)
                last_problem = f"{self.base_url} answered {response.status_code}{': ' + detail if detail else ''}"
                wait = self._retry_after(response)
                if wait is not None and attempt < self.retries:
                    if deadline is not None and time.perf_counter() + wait > deadline:
                        break
                    time.sleep(wait)
                    continue
            if attempt < self.retries:
                wait = self.backoff_s * (2**attempt)
                if deadline is not None and time.perf_counter() + wait > deadline:
                    break
                time.sleep(wait)
        tries = f" after {stats.attempts if stats else self.retries + 1} tries" if self.retries else ""
        raise CloudUnavailable(redact(last_problem + tries, self._secret))

    def _error_detail(self, response: httpx.Response) -> str:
        try:
            response.read()
        except httpx.HTTPError:
            return ""
        try:
            payload = response.json()
            detail = payload.get("error", payload) if isinstance(payload, dict) else payload
            if isinstance(detail, dict):
                detail = detail.get("message") or detail.get("detail") or ""
            text = str(detail)
        except ValueError:
            text = response.text
        return redact(" ".join(str(text).split())[:200], self._secret)

    @staticmethod
    def _retry_after(response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after")
        try:
            return min(max(float(value), 0.0), MAX_RETRY_AFTER_S) if value is not None else None
        except ValueError:
            return None
