"""Readers turn a file's bytes into a Document: structural blocks (paragraphs with their section
path and line span) plus metadata. Readers never raise for bad content; they degrade and warn.
"""

from __future__ import annotations

from pathlib import Path

from skiff.local.readers.base import Block, Document, UnreadableDocument, decode_text, looks_binary
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


__all__ = [
    "Block",
    "Document",
    "UnreadableDocument",
    "SUPPORTED_SUFFIXES",
    "decode_text",
    "looks_binary",
    "read_document",
    "reader_for",
]
