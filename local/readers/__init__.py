"""Readers turn a file's bytes into a Document: structural blocks (paragraphs with their section
path and line span) plus metadata. Readers never raise for bad content; they degrade and warn.
"""

from __future__ import annotations

from pathlib import Path

from skiff.local.readers.base import Block, Document, UnreadableDocument, clean_text, decode_text, looks_binary
from skiff.local.readers.markup import read_markdown, read_org, read_plain_text, read_rst
from skiff.local.readers.pdf import read_pdf

READERS = {
    ".md": read_markdown,
    ".markdown": read_markdown,
    ".txt": read_plain_text,
    ".text": read_plain_text,
    ".rst": read_rst,
    ".org": read_org,
    ".pdf": read_pdf,
}

SUPPORTED_SUFFIXES = frozenset(READERS)


def reader_for(path: Path):
    return READERS.get(path.suffix.lower())


def read_document(path: Path, data: bytes) -> Document:
    """Parse `data` (the file's bytes) with the reader its suffix names."""
    reader = reader_for(path)
    if reader is None:
        raise UnreadableDocument(f"unsupported file type {path.suffix!r}")
    return reader(data)


def source_lines(path: Path, page: int | None = None, max_bytes: int = 20 * 1024 * 1024) -> list[str]:
    """The lines a cited source's line numbers count: the file's decoded text, or for a PDF the
    text of that page as the indexer saw it. Raises OSError or UnreadableDocument."""
    if path.stat().st_size > max_bytes:
        raise UnreadableDocument(f"larger than {max_bytes // (1024 * 1024)} MB")
    data = path.read_bytes()
    if path.suffix.lower() != ".pdf":
        return decode_text(data, []).split("\n")
    lines: list[str] = []
    for block in read_pdf(data).blocks:
        if block.page == page:
            lines.extend([""] * max(0, block.line_start - 1 - len(lines)))
            lines.extend(block.text.split("\n"))
    return lines


__all__ = [
    "source_lines",
    "Block",
    "Document",
    "UnreadableDocument",
    "SUPPORTED_SUFFIXES",
    "clean_text",
    "decode_text",
    "looks_binary",
    "read_document",
    "reader_for",
]
