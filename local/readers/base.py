from __future__ import annotations

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


def decode_text(data: bytes, warnings: list[str]) -> str:
    """UTF-8 (BOM tolerated); invalid bytes are replaced, with a warning, never an error."""
    if looks_binary(data):
        raise UnreadableDocument("binary file (NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        text = data.decode("utf-8-sig", errors="replace")
        warnings.append(f"invalid UTF-8 at byte {error.start}; undecodable bytes replaced")
    return text.replace("\r\n", "\n").replace("\r", "\n")


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
