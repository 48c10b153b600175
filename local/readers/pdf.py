"""PDF reader (pypdf): one block run per page, page numbers kept; a broken page degrades, a broken
file is skipped with the reason."""

from __future__ import annotations

import io
import logging

from skiff.local.readers.base import Block, Document, UnreadableDocument, paragraphs

# pypdf logs every recoverable oddity of real-world PDFs at WARNING; skiff reports its own reasons.
logging.getLogger("pypdf").setLevel(logging.ERROR)

# PDF text often has no blank lines, so long pages are cut into runs of this many lines.
LINES_PER_BLOCK = 12


def read_pdf(data: bytes) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise UnreadableDocument("not a PDF (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument("encrypted PDF")
        pages = list(reader.pages)
    except UnreadableDocument:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, OSError) as error:
        raise UnreadableDocument(f"broken PDF ({type(error).__name__}: {error})"[:300]) from None
    blocks: list[Block] = []
    warnings: list[str] = []
    title = None
    try:
        info = reader.metadata
        title = str(info.title).strip() if info and info.title else None
    except Exception:  # noqa: BLE001 - metadata is optional; a broken info dict must not cost the text
        title = None
    failed_pages: list[int] = []
    for number, page in enumerate(pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception:  # noqa: BLE001 - pypdf raises many types on hostile pages; keep the others
            failed_pages.append(number)
            continue
        lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").split("\n")
        for block in paragraphs(lines, 1, (), page=number):
            block_lines = block.text.split("\n")
            for start in range(0, len(block_lines), LINES_PER_BLOCK):
                piece = "\n".join(block_lines[start : start + LINES_PER_BLOCK]).strip()
                if piece:
                    first = block.line_start + start
                    last = min(block.line_end, first + LINES_PER_BLOCK - 1)
                    blocks.append(Block(piece, (), first, last, number))
    if failed_pages:
        warnings.append(f"text of page(s) {', '.join(map(str, failed_pages[:20]))} could not be extracted")
    if pages and not blocks:
        warnings.append("no extractable text (scanned PDF?)")
    return Document("pdf", blocks, title=title, warnings=warnings)
