"""Chunking: merge a document's blocks into chunks that respect headings and paragraphs, each
bounded in embedder tokens (header included), so the embedder never silently truncates."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Protocol

from skiff.local.readers import Block, Document

SECTION_SEPARATOR = " > "
# [CLS] and [SEP] take two of the embedder's positions.
SPECIAL_TOKENS = 2
_SOFT_BREAK = re.compile(r"\n|(?<=[.!?。！？])\s+|\s+")


class TokenCounter(Protocol):
    def count_tokens(self, text: str) -> int: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


@dataclass(frozen=True)
class Chunk:
    text: str  # what the language model reads
    embed_text: str  # header + text: what the embedder reads
    section: tuple[str, ...]
    line_start: int
    line_end: int
    page: int | None = None


def chunk_document(doc: Document, title: str, counter: TokenCounter, max_tokens: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    group: list[Block] = []
    for block in doc.blocks:
        if group and (block.section, block.page) != (group[0].section, group[0].page):
            chunks.extend(_chunk_group(group, title, counter, max_tokens))
            group = []
        group.append(block)
    if group:
        chunks.extend(_chunk_group(group, title, counter, max_tokens))
    return chunks


def chunk_header(title: str, section: tuple[str, ...]) -> str:
    """The note's title and heading path, as a chunk carries them for search: "Title > H1 > H2"."""
    return SECTION_SEPARATOR.join(part for part in (title, *section) if part)


def _header(title: str, section: tuple[str, ...], counter: TokenCounter, max_tokens: int) -> tuple[str, int]:
    header = chunk_header(title, section)
    tokens = counter.count_tokens(header)
    if tokens > max_tokens // 3:  # an absurd heading must not starve the text
        header = _cut_to_tokens(header, max_tokens // 3, counter)
        tokens = counter.count_tokens(header)
    return header, tokens


def _chunk_group(blocks: list[Block], title: str, counter: TokenCounter, max_tokens: int) -> Iterator[Chunk]:
    section, page = blocks[0].section, blocks[0].page
    header, header_tokens = _header(title, section, counter, max_tokens)
    budget = max(8, max_tokens - SPECIAL_TOKENS - header_tokens)

    def make(text: str, start: int, end: int) -> Chunk:
        embed_text = f"{header}\n\n{text}" if header else text
        return Chunk(text, embed_text, section, start, end, page)

    pending: list[str] = []
    pending_tokens = 0
    start = end = 0
    for block in blocks:
        tokens = counter.count_tokens(block.text) if len(block.text) < budget * 16 else budget + 1
        if tokens > budget:
            if pending:
                yield make("\n\n".join(pending), start, end)
                pending, pending_tokens = [], 0
            for piece, first, last in _split_long(block, budget, counter):
                yield make(piece, first, last)
            continue
        # WordPiece ignores whitespace, so token counts add up across the paragraph join.
        if pending and pending_tokens + tokens > budget:
            yield make("\n\n".join(pending), start, end)
            pending, pending_tokens = [], 0
        if not pending:
            start = block.line_start
        pending.append(block.text)
        pending_tokens += tokens
        end = block.line_end
    if pending:
        yield make("\n\n".join(pending), start, end)


def _split_long(block: Block, budget: int, counter: TokenCounter) -> Iterator[tuple[str, int, int]]:
    """Cut an over-long paragraph at line, sentence or word breaks, else on token boundaries."""
    text = block.text
    position = 0
    line = block.line_start
    # Work in character windows first so a 20 MB single line never becomes one token list.
    window = budget * 4
    while position < len(text):
        piece_end = _soft_cut(text, position, position + window)
        piece = text[position:piece_end]
        if counter.count_tokens(piece) > budget:
            piece = _cut_to_tokens(piece, budget, counter, prefer_soft=True)
            piece_end = position + len(piece)
        stripped = piece.strip()
        lines_in_piece = piece.count("\n")
        if stripped:
            leading = piece[: len(piece) - len(piece.lstrip())].count("\n")
            # The last line is that of the last non-blank character: a piece cut just after a
            # newline ends on the line before, not on the line the next piece starts on.
            trailing = piece[len(piece.rstrip()) :].count("\n")
            yield stripped, line + leading, line + lines_in_piece - trailing
        line += lines_in_piece
        position = max(piece_end, position + 1)


def _soft_cut(text: str, start: int, limit: int) -> int:
    """The last soft break in text[start:limit] past its midpoint, or limit itself."""
    if limit >= len(text):
        return len(text)
    best = None
    for match in _SOFT_BREAK.finditer(text, start + (limit - start) // 2, limit):
        best = match.end()
    return best if best is not None else limit


def _cut_to_tokens(text: str, budget: int, counter: TokenCounter, prefer_soft: bool = False) -> str:
    offsets = counter.token_offsets(text)
    if len(offsets) <= budget:
        return text
    cut = offsets[budget - 1][1]
    if prefer_soft:
        soft = _soft_cut(text, 0, cut)
        if soft > 0 and soft != cut:
            cut = soft
    return text[:cut]

