from __future__ import annotations

import re
from dataclasses import dataclass, field


class UnreadableDocument(Exception):
    """The file cannot be turned into text at all; the message is the skip reason."""


@dataclass(frozen=True)
class Block:
    """A paragraph-sized unit of text with where it came from."""

    text: str
    section: tuple[str, ...]
    line_start: int  # 1-based, inclusive; within the page for PDFs
    line_end: int
    page: int | None = None


@dataclass
class Document:
    kind: str
    blocks: list[Block]
    title: str | None = None
    metadata: dict[str, str | bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


BINARY_SNIFF_BYTES = 8192


def looks_binary(data: bytes) -> bool:
    """NUL bytes near the start are the classic (git, grep) sign of a binary file."""
    return b"\x00" in data[:BINARY_SNIFF_BYTES]


# C0 controls but tab and newline, DEL and C1 controls. Why: a NUL past the binary sniff ends a C
# string (llama.cpp's prompt) early, and ESC/CSI sequences in a note would reach the terminal when
# its text is shown as a source or quoted back by the model.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A lone surrogate cannot be encoded as UTF-8: chromadb and SQLite refuse the whole batch holding it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str, warnings: list[str] | None = None) -> str:
    """Text with control characters removed and lone surrogates replaced by U+FFFD; newlines and
    tabs are kept, so line numbers stay those of the source."""
    cleaned, controls = _CONTROL.subn("", text)
    cleaned, surrogates = _SURROGATE.subn("\ufffd", cleaned)
    if warnings is not None and controls:
        warnings.append(f"{controls} control character(s) removed (NUL, escape sequences)")
    if warnings is not None and surrogates:
        warnings.append(f"{surrogates} invalid character(s) (lone surrogates) replaced")
    return cleaned


def decode_text(data: bytes, warnings: list[str]) -> str:
    """UTF-8 (BOM tolerated); invalid bytes are replaced, with a warning, never an error."""
    if looks_binary(data):
        raise UnreadableDocument("binary file (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        text = data.decode("utf-8-sig", errors="replace")
        warnings.append(f"invalid UTF-8 at byte {error.start}; undecodable bytes replaced")
    return clean_text(text.replace("\r\n", "\n").replace("\r", "\n"), warnings)


def paragraphs(lines: list[str], first_line: int, section: tuple[str, ...], page: int | None = None):
    """Split lines into blank-line-separated blocks, keeping 1-based line numbers."""
    start = None
    for offset, line in enumerate(lines + [""]):
        if line.strip():
            if start is None:
                start = offset
        elif start is not None:
            text = "\n".join(lines[start:offset]).strip()
            if text:
                yield Block(text, section, first_line + start, first_line + offset - 1, page)
            start = None
