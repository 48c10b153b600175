"""Server-sent events, decoded from raw bytes (the WHATWG event-stream rules that chat APIs use).

Hand-written rather than httpx-sse because the caller must see every line, keep-alive comments
included, to enforce its deadlines; httpx-sse swallows comments inside its own loop. It also
works on bytes, not on httpx's lines, so that a line that never ends cannot grow without bound:
httpx's line decoder keeps a line however long it gets.

The rules (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
- Lines end in CRLF, LF or CR; a CR at the end of one chunk and an LF at the start of the next
  are one line ending. Bytes are decoded as UTF-8 with replacement; a leading BOM is dropped.
- A line starting with ":" is a comment. Otherwise the field name is what precedes the first
  ":" (the whole line if there is none) and the value what follows, less one leading space.
- "data" appends the value and a newline to the data buffer, "event" sets the event type; "id"
  and "retry" are ignored here (the client never reconnects), as are unknown fields.
- A blank line dispatches the event, if the data buffer is not empty, without its last newline,
  with the type "message" when none was given; then both buffers are cleared.
One deliberate departure: at the end of the stream a last line without its line ending is still
interpreted, and an event without its blank line is still dispatched. The caller judges whether
the stream ended properly; the text in that event is not thrown away.

Limits: `max_line_bytes` bounds one line (without its line ending), `max_event_bytes` the data
lines of one event together. Going over either raises an `SSEError`, the only exception this
module raises, before the bytes are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_LINE_BYTES = 1 << 20
MAX_EVENT_BYTES = 1 << 20

# A line ending and any blank lines after it: a run of CRs and LFs, which is always a run of line
# endings. (A pattern that also matched the line's text would try every start in a line that has
# no ending: quadratic.)
_ENDS = re.compile(rb"[\r\n]+")
_BOM = b"\xef\xbb\xbf"


class SSEError(ValueError):
    """The byte stream broke one of the decoder's limits."""


class SSELineTooLong(SSEError):
    pass


class SSEEventTooLarge(SSEError):
    pass


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str


class SSEDecoder:
    """Incremental: `feed` each chunk of bytes as it arrives, then `close` at the end of the body.
    Both yield each dispatched event. A caller that enforces deadlines checks them per chunk: a
    keep-alive comment dispatches nothing, so it yields nothing here."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_event_bytes = max_event_bytes
        self._partial = bytearray()  # the current line, not yet ended
        self._after_cr = False  # the last chunk ended in CR: an LF first in the next one is its pair
        self._first_line = True
        self._event_type = ""
        self._data: list[str] = []
        self._data_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes held for a line that has not ended yet (at most max_line_bytes)."""
        return len(self._partial)

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        start = 0
        if self._after_cr and chunk[:1] == b"\n":
            start = 1
        if chunk:
            self._after_cr = False
        for match in _ENDS.finditer(chunk, start):
            piece, ends = chunk[start:match.start()], match.group()
            if len(self._partial) + len(piece) > self.max_line_bytes:
                raise self._too_long()
            if self._partial:
                self._partial += piece
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = piece
            start = match.end()
            if start == len(chunk) and ends.endswith(b"\r"):
                self._after_cr = True
            event = self._interpret(line)
            if event is not None:
                yield event
            if len(ends) > 2 or (len(ends) == 2 and ends != b"\r\n"):
                # More line endings: blank lines. The first dispatches, the rest find nothing to do.
                event = self._interpret(b"")
                if event is not None:
                    yield event
        rest = len(chunk) - start
        if rest:
            if len(self._partial) + rest > self.max_line_bytes:
                raise self._too_long()
            self._partial += chunk[start:]

    def close(self) -> Iterator[ServerSentEvent]:
        if self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            event = self._interpret(line)
            if event is not None:
                yield event
        if self._data:
            yield self._dispatch()

    def _too_long(self) -> SSELineTooLong:
        return SSELineTooLong(f"a line longer than {self.max_line_bytes} bytes")

    def _interpret(self, raw: bytes) -> ServerSentEvent | None:
        if self._first_line:
            self._first_line = False
            raw = raw.removeprefix(_BOM)
        if not raw:
            if self._data:
                return self._dispatch()
            self._event_type = ""
            return None
        if raw[:1] == b":":
            return None
        line = raw.decode("utf-8", "replace")
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_bytes += len(raw)
            if self._data_bytes > self.max_event_bytes:
                raise SSEEventTooLarge(f"an event larger than {self.max_event_bytes} bytes")
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        return None

    def _dispatch(self) -> ServerSentEvent:
        event = ServerSentEvent(self._event_type or "message", "\n".join(self._data))
        self._event_type, self._data, self._data_bytes = "", [], 0
        return event


def iter_events(chunks: Iterable[bytes], max_line_bytes: int = MAX_LINE_BYTES,
                max_event_bytes: int = MAX_EVENT_BYTES) -> Iterator[ServerSentEvent]:
    """Every event in a body given as chunks of bytes, as `SSEDecoder` yields them."""
    decoder = SSEDecoder(max_line_bytes, max_event_bytes)
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()
