"""Server-sent events, decoded line by line (the WHATWG event-stream rules that chat APIs use).

Hand-written rather than httpx-sse because the caller must see every line, keep-alive comments
included, to enforce its deadlines; httpx-sse swallows comments inside its own loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str


def iter_events(lines: Iterable[str]) -> Iterator[ServerSentEvent | None]:
    """Yields each dispatched event, and None for every line that dispatches nothing."""
    event_type, data = "", []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield ServerSentEvent(event_type or "message", "\n".join(data))
            else:
                yield None
            event_type, data = "", []
            continue
        if line.startswith(":"):
            yield None
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        yield None
    if data:  # a final event without its blank line: deliver it, the caller judges the ending
        yield ServerSentEvent(event_type or "message", "\n".join(data))
