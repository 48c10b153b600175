"""Coverage-guided fuzzing of skiff's readers (atheris, libFuzzer) and the invariants every
reader keeps, which tests/test_properties.py checks too.

Every input is read as each supported file type (.md, .markdown, .txt, .text, .rst, .org, .pdf);
the only exception a reader may raise is UnreadableDocument (the skip reason), and a document it
returns must hold together: line spans inside the file, blocks in order and not overlapping, block
text that is the (cleaned) text of the lines it claims, no control characters or lone surrogates.

tests/test_fuzz.py runs this for about 25 seconds. By hand, for longer (new inputs go to the
first folder, the committed seeds are only read; a crash is written to ./crash-<sha1>):

    mkdir -p /tmp/readers-corpus
    .venv/bin/python fuzz/readers_fuzz.py /tmp/readers-corpus fuzz/corpus/readers \\
        -max_total_time=3600 -timeout=20 -rss_limit_mb=2048 -max_len=65536

and to replay one input (a crash file, or any file) through the checks:

    .venv/bin/python fuzz/readers_fuzz.py crash-<sha1>
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if __name__ == "__main__":
    import atheris

    # Instrument what the readers run (skiff's readers, PyYAML for front matter, pypdf), so
    # libFuzzer is guided by their branches.
    with atheris.instrument_imports(include=["skiff", "yaml", "pypdf"]):
        import pypdf  # noqa: F401
        import skiff.local.readers  # noqa: F401
        import yaml  # noqa: F401

from skiff.local.readers import (
    SUPPORTED_SUFFIXES,
    Document,
    UnreadableDocument,
    decode_text,
    read_document,
)
from skiff.local.readers.markup import clean_markdown

SUFFIXES = sorted(SUPPORTED_SUFFIXES)
# What clean_text removes: no block, title or metadata value may hold one.
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def read(suffix: str, data: bytes) -> Document | None:
    """The document, or None when the reader refused the file (with a non-empty reason)."""
    try:
        return read_document(Path(f"fuzzed{suffix}"), data)
    except UnreadableDocument as error:
        assert str(error), "a skip needs a reason"
        return None


def check_document(suffix: str, data: bytes, doc: Document) -> None:
    """The invariants of a document read from `data` as a `suffix` file."""
    assert doc.kind in ("markdown", "text", "rst", "org", "pdf")
    assert all(isinstance(w, str) and w for w in doc.warnings)
    if doc.title is not None:
        assert isinstance(doc.title, str) and not FORBIDDEN.search(doc.title), doc.title
    for key, value in doc.metadata.items():
        assert isinstance(value, str) or (key, value) == ("private", True), (key, value)
        assert not (isinstance(value, str) and FORBIDDEN.search(value)), (key, value)
    if suffix == ".pdf":
        check_pdf_blocks(doc)
        return
    lines = decode_text(data, []).split("\n")
    previous_end = 0
    for block in doc.blocks:
        assert 1 <= block.line_start <= block.line_end <= len(lines), (block, len(lines))
        assert block.line_start > previous_end, ("blocks overlap or go backwards", block, previous_end)
        previous_end = block.line_end
        assert block.page is None
        assert block.text and block.text == block.text.strip(), block
        assert not FORBIDDEN.search(block.text), block
        assert all(isinstance(part, str) for part in block.section), block
        source = "\n".join(lines[block.line_start - 1 : block.line_end])
        if suffix in (".txt", ".text", ".rst"):
            # No markup is rewritten: a block is exactly the text of its lines.
            assert block.text == source.strip(), (block, source)
        else:
            # Markdown and Org rewrite wikilinks and callouts, verbatim (fenced) blocks are kept.
            assert block.text in (source.strip(), clean_markdown(source).strip()), (block, source)
        # The span is tight: as many lines as the text has (cleaning keeps every newline).
        assert len(block.text.split("\n")) == block.line_end - block.line_start + 1, (block, source)
    if suffix == ".org" and not re.search(r"(?im)^\s*(:END:\s*$|#\+(BEGIN|END)_)", "\n".join(lines)):
        # Without drawers and blocks, Org drops only headings, keyword lines and blank space.
        kept = [line for line in lines if not re.match(r"^(\*+\s|\s*#\+\w+:)", line)]
        assert squeeze("".join(b.text for b in doc.blocks)) == squeeze(clean_markdown("\n".join(kept))), doc.blocks
    if suffix in (".txt", ".text"):
        # Plain text loses nothing but blank space.
        assert "".join("".join(b.text.split()) for b in doc.blocks) == "".join("\n".join(lines).split())


def squeeze(text: str) -> str:
    return "".join(text.split())


def check_pdf_blocks(doc: Document) -> None:
    previous = (0, 0)
    for block in doc.blocks:
        assert block.page is not None and block.page >= 1, block
        assert 1 <= block.line_start <= block.line_end, block
        assert block.line_end - block.line_start + 1 == len(block.text.split("\n")), block
        assert (block.page, block.line_start) > previous, ("blocks out of order", block, previous)
        previous = (block.page, block.line_end)
        assert block.text and block.text == block.text.strip(), block
        assert not FORBIDDEN.search(block.text), block
        assert block.section == ()


def check_all_readers(data: bytes) -> None:
    for suffix in SUFFIXES:
        doc = read(suffix, data)
        if doc is not None:
            check_document(suffix, data, doc)


def TestOneInput(data: bytes) -> None:
    check_all_readers(data)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
