"""Properties of skiff's SSE decoder (cloud/sse.py), checked against a reference written straight
from the WHATWG event-stream rules: how the bytes are cut into chunks never matters; CR, LF and
CRLF end lines alike; any bytes at all raise nothing but the decoder's own `SSEError`; and a line
or event over its limit is refused before it is kept. Deterministic: derandomized, no database."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from skiff.cloud.sse import (
    ServerSentEvent,
    SSEDecoder,
    SSEError,
    SSEEventTooLarge,
    SSELineTooLong,
    iter_events,
)

PROPERTIES = settings(derandomize=True, database=None, max_examples=150, deadline=None)
BOM = b"\xef\xbb\xbf"
BIG = 1 << 20


def reference(stream: bytes, max_line: int = BIG, max_event: int = BIG) -> tuple[list, type | None]:
    """The events of a whole stream, and the error it ends with, straight from the spec: split
    into lines at CRLF, CR or LF; one BOM dropped at the start; fields; dispatch on a blank line.
    Like skiff's decoder, a last line without its ending and a last event without its blank line
    still count (the one departure from the spec, see cloud/sse.py)."""
    *lines, rest = re.split(rb"\r\n|\r|\n", stream)
    if rest:
        lines.append(rest)
    events: list[ServerSentEvent] = []
    event_type, data, size = "", [], 0
    for n, raw in enumerate(lines):
        if len(raw) > max_line:
            return events, SSELineTooLong
        if n == 0 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if not raw:
            if data:
                events.append(ServerSentEvent(event_type or "message", "\n".join(data)))
            event_type, data, size = "", [], 0
            continue
        if raw.startswith(b":"):
            continue
        text = raw.decode("utf-8", "replace")
        if ":" in text:
            name, value = text.split(":", 1)
            value = value.removeprefix(" ")
        else:
            name, value = text, ""
        if name == "data":
            size += len(raw)
            if size > max_event:
                return events, SSEEventTooLarge
            data.append(value)
        elif name == "event":
            event_type = value
    if data:
        events.append(ServerSentEvent(event_type or "message", "\n".join(data)))
    return events, None


def decode(chunks: list[bytes], max_line: int = BIG, max_event: int = BIG) -> tuple[list, type | None]:
    """skiff's decoder over the chunks: the events it yielded, and the error it raised, if any."""
    events: list[ServerSentEvent] = []
    decoder = SSEDecoder(max_line, max_event)
    try:
        for chunk in chunks:
            events.extend(decoder.feed(chunk))
            assert decoder.buffered <= max_line  # never more than one line's worth held
        events.extend(decoder.close())
    except SSEError as error:
        return events, type(error)
    return events, None


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


# -- strategies: streams that look like SSE (so events happen), and bytes that do not ----------

ENDINGS = st.sampled_from([b"\n", b"\r", b"\r\n"])
FIELDS = st.sampled_from([b"data", b"data", b"data", b"event", b"id", b"retry", b"dat", b"Data", b""])
VALUES = st.text(st.characters(exclude_characters="\r\n"), max_size=12).map(lambda t: t.encode()) | st.binary(
    max_size=8).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def sse_lines(draw) -> list[bytes]:
    """Lines without their endings: fields (with and without a colon and its space), comments,
    blank lines, and now and then a BOM."""
    lines = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            lines.append(b"")
        elif kind == 1:
            lines.append(b":" + draw(VALUES))
        else:
            name, value = draw(FIELDS), draw(VALUES)
            colon = draw(st.sampled_from([b": ", b":", b":  ", b""]))
            lines.append(name + colon + (value if colon else b""))
    if lines and draw(st.booleans()):
        lines[0] = BOM + lines[0]
    return lines


@st.composite
def sse_streams(draw) -> bytes:
    lines = draw(sse_lines())
    endings = [draw(ENDINGS) for _ in lines]
    stream = b"".join(line + ending for line, ending in zip(lines, endings, strict=True))
    if draw(st.booleans()):
        stream += draw(VALUES)  # a last line without its ending
    return stream


CUTS = st.lists(st.integers(0, 400), max_size=12)


# -- properties -------------------------------------------------------------------------------


@PROPERTIES
@given(sse_streams(), CUTS)
@example(b"data: a\r\n\r\n", [8])  # CR at the end of one chunk, its LF first in the next
@example(b"data: a\r\r\n", [8])  # CR, then CRLF: two line endings, the second a blank line
@example(b"\xef\xbb\xbfdata: bom\n\n", [1, 2])  # a BOM cut in pieces is still the BOM
def test_how_the_stream_is_cut_into_chunks_does_not_matter(stream, cuts):
    whole = decode([stream])
    assert decode(cut(stream, cuts)) == whole
    assert decode([stream[i:i + 1] for i in range(len(stream))]) == whole  # a byte at a time
    assert whole == reference(stream)


@PROPERTIES
@given(sse_lines(), st.data())
def test_cr_lf_and_crlf_end_lines_alike(lines, data):
    endings = [data.draw(ENDINGS) for _ in lines]
    for n in range(len(lines) - 1):
        if endings[n] == b"\r" and not lines[n + 1] and endings[n + 1].startswith(b"\n"):
            endings[n] = b"\r\n"  # CR then a blank line's LF would be one CRLF: one line ending, not two
    with_lf = b"".join(line + b"\n" for line in lines)
    mixed = b"".join(line + ending for line, ending in zip(lines, endings, strict=True))
    assert decode([mixed]) == decode([with_lf]) == reference(with_lf)


@PROPERTIES
@given(st.binary(max_size=600), CUTS, st.integers(1, 80), st.integers(1, 120))
def test_any_bytes_raise_nothing_but_the_decoders_own_error(stream, cuts, max_line, max_event):
    # decode() lets anything but SSEError through, so another exception fails this test.
    result = decode(cut(stream, cuts), max_line, max_event)
    assert result == reference(stream, max_line, max_event)
    assert result == decode([stream], max_line, max_event)


@PROPERTIES
@given(sse_streams(), st.integers(1, 200), st.integers(1, 64), CUTS)
def test_a_line_over_the_limit_is_refused_before_it_is_kept(prefix, length, max_line, cuts):
    """The events before the long line all arrive; the long line raises SSELineTooLong while
    the decoder holds no more than max_line bytes of it, however it is cut."""
    prefix = prefix.rstrip(b"\r") + b"\n\n"  # a CR last would pair with nothing: keep the prefix whole
    stream = prefix + b"x" * (max_line + length)
    events, error = decode(cut(stream, cuts), BIG, BIG)
    assert error is None  # no limit: one long event-less line
    events, error = decode(cut(stream, cuts), max_line, BIG)
    expected, expected_error = reference(stream, max_line, BIG)
    assert (events, error) == (expected, expected_error)
    assert error is SSELineTooLong


def test_an_endless_line_is_refused_at_the_limit_without_growing():
    decoder = SSEDecoder(max_line_bytes=1 << 16)
    with pytest.raises(SSELineTooLong):
        for _ in range(1 << 12):  # up to 64 MiB, a KiB at a time
            list(decoder.feed(b"a" * 1024))
            assert decoder.buffered <= 1 << 16
    assert decoder.buffered <= 1 << 16


def test_an_event_over_the_limit_is_refused():
    lines = b"data: " + b"d" * 100 + b"\n"
    assert decode([lines * 10 + b"\n"], BIG, 1100)[0] == [ServerSentEvent("message", "\n".join(["d" * 100] * 10))]
    assert decode([lines * 11 + b"\n"], BIG, 1100) == ([], SSEEventTooLarge)


@pytest.mark.parametrize("stream, expected", [
    (b"data: a\n\n", [("message", "a")]),
    (b"data:a\n\n", [("message", "a")]),  # no space after the colon
    (b"data:  a\n\n", [("message", " a")]),  # only one space is dropped
    (b"data\n\n", [("message", "")]),  # no colon: the whole line is the field name
    (b"data: a\ndata: b\n\n", [("message", "a\nb")]),
    (b"event: error\ndata: x\n\ndata: y\n\n", [("error", "x"), ("message", "y")]),  # the type resets
    (b"event: lost\n\ndata: y\n\n", [("message", "y")]),  # a blank line with no data resets it too
    (b": ping\n\n: ping\n\n", []),
    (b"\xef\xbb\xbfdata: a\n\n", [("message", "a")]),
    (b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [("message", "a")]),  # a later BOM stays: "\ufeffdata" is no field
    (b"data: \xff\xfe\n\n", [("message", "\ufffd\ufffd")]),  # bytes that are not UTF-8 are replaced
    (b"data: a", [("message", "a")]),  # a last event without its blank line is delivered
])
def test_the_rules_one_by_one(stream, expected):
    assert [(e.event, e.data) for e in iter_events([stream])] == expected
    assert decode([stream]) == reference(stream)
