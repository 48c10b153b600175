"""PDF reader (pypdf): one block run per page, page numbers kept; a broken page degrades, a broken
file is skipped with the reason."""

from __future__ import annotations

import io
import logging
import time

from skiff.local.readers.base import (
    Block,
    Document,
    UnreadableDocument,
    clean_text,
    paragraphs,
)

# pypdf logs every recoverable oddity of real-world PDFs at WARNING; skiff reports its own reasons.
logging.getLogger("pypdf").setLevel(logging.ERROR)

# PDF text often has no blank lines, so long pages are cut into runs of this many lines.
LINES_PER_BLOCK = 12

# Why a text budget: pages can share one compressed content stream, so a 4 KB file made 20 pages of
# 1 MB of text each (and 1,000 pages would be a gigabyte, all chunked and embedded). pypdf caps what
# one stream inflates to, not how often it is drawn. Deflate rarely gets past ~10x on prose, so text
# beyond 16 characters per byte of file (or 256 K characters, ~100 pages, for a small file) is cut
# off, with a warning that says so.
TEXT_CHARS_PER_BYTE = 16
MIN_TEXT_CHARS = 256 * 1024
# Why a time budget: a page can be hundreds of thousands of drawing operators with no text, which
# pypdf parses again for every page that shares them; pages past this many seconds are left out.
# CPU seconds of this thread, not wall time: a busy machine must not cut a good PDF short.
EXTRACT_CPU_SECONDS = 60.0


def read_pdf(data: bytes) -> Document:
    from pypdf import PdfReader

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise UnreadableDocument("not a PDF (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument("encrypted PDF")
        pages = list(reader.pages)
    except UnreadableDocument:
        raise
    except Exception as error:  # noqa: BLE001 - pypdf raises many types on hostile files
        # Not only its own errors: a startxref of 30 digits raised OverflowError (fuzzing found
        # it), which no list of expected types had, and which aborted the whole indexing run.
        raise UnreadableDocument(f"broken PDF ({type(error).__name__}: {error})"[:300]) from None
    blocks: list[Block] = []
    warnings: list[str] = []
    title = None
    try:
        info = reader.metadata
        if info and info.title:
            title = clean_text(str(info.title)).strip() or None
    except Exception:  # noqa: BLE001 - metadata is optional; a broken info dict must not cost the text
        title = None
    allowed = max(MIN_TEXT_CHARS, TEXT_CHARS_PER_BYTE * len(data))
    budget = allowed
    deadline = time.thread_time() + EXTRACT_CPU_SECONDS
    failed_pages: list[int] = []
    failure = ""
    truncated = False
    cleaned_pages: list[int] = []
    for number, page in enumerate(pages, start=1):
        if time.thread_time() > deadline:
            warnings.append(f"text extraction stopped at page {number} of {len(pages)}: "
                            f"over {EXTRACT_CPU_SECONDS:.0f} CPU seconds (a hostile or pathological PDF?)")
            break
        try:
            text = page.extract_text() or ""
        except Exception as error:  # noqa: BLE001 - pypdf raises many types on hostile pages; keep the others
            failed_pages.append(number)
            failure = failure or f"{type(error).__name__}: {error}"[:200]
            continue
        if len(text) > budget:
            text = text[:budget]
            warnings.append(f"text cut off at page {number} of {len(pages)}: more than {allowed} characters "
                            f"from a {len(data)}-byte file (a decompression bomb?)")
            truncated = True
        else:
            budget -= len(text)
        # Lone surrogates (from a font's ToUnicode map) and control characters are cleaned as in
        # text files: chromadb refuses a batch holding a surrogate.
        notes: list[str] = []
        text = clean_text(text.replace("\r\n", "\n").replace("\r", "\n"), notes)
        if notes:
            cleaned_pages.append(number)
        lines = text.split("\n")
        for block in paragraphs(lines, 1, (), page=number):
            block_lines = block.text.split("\n")
            for start in range(0, len(block_lines), LINES_PER_BLOCK):
                piece = "\n".join(block_lines[start : start + LINES_PER_BLOCK]).strip()
                if piece:
                    first = block.line_start + start
                    last = min(block.line_end, first + LINES_PER_BLOCK - 1)
                    blocks.append(Block(piece, (), first, last, number))
        if truncated:
            break
    if failed_pages:
        warnings.append(f"text of page(s) {', '.join(map(str, failed_pages[:20]))} could not be extracted "
                        f"({failure})")
    if cleaned_pages:
        warnings.append(f"control characters or invalid characters removed from the text of page(s) "
                        f"{', '.join(map(str, cleaned_pages[:20]))}")
    if pages and not blocks and not failed_pages:
        warnings.append("no extractable text (scanned PDF?)")
    return Document("pdf", blocks, title=title, warnings=warnings)
