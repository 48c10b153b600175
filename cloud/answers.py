"""Reading an OpenAI-compatible chat answer: its streamed chunks, or one chat.completion body from
a server that ignored `stream`. Whatever a server sends, the result is text, a `CloudStats` update
or a `CloudError`; a reported error is passed on without the key."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from skiff.cloud.errors import CloudBadResponse, CloudStreamBroken, redact
from skiff.cloud.sse import ServerSentEvent


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


class AnswerReader:
    def __init__(self, base_url: str, secret: str | None) -> None:
        self.base_url = base_url
        self._secret = secret

    def chunk(self, event: ServerSentEvent, stats: CloudStats, partial: bool) -> str:
        try:
            chunk = json.loads(event.data)
        except (ValueError, RecursionError):
            raise CloudStreamBroken(f"{self.base_url} sent a malformed event", partial=partial) from None
        if not isinstance(chunk, dict):
            raise CloudStreamBroken(f"{self.base_url} sent a malformed event", partial=partial)
        self._raise_reported_error(chunk, event.event == "error", partial)
        self._read_usage(chunk, stats)
        return self._read_choice(chunk, stats, "delta")

    def whole(self, text: str, stats: CloudStats) -> str:
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


def _count(value) -> int:
    """A token count from a server's usage report; anything that is not a count is 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, int(value))
