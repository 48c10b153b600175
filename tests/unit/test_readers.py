from pathlib import Path

import pytest

from skiff.local.readers import UnreadableDocument, read_document


def read(name: str, text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    return read_document(Path(name), data)


def test_markdown_front_matter_headings_wikilinks_and_callouts():
    doc = read(
        "note.md",
        "---\ntitle: Garden log\ntags: [plants, log]\nprivate: true\n---\n"
        "# Garden\n\nIntro about [[Tomatoes|my tomatoes]] and [[Basil#Harvest]].\n\n"
        "## Watering\n\n> [!tip]- Morning\n> Water before 9.\n\n"
        "```python\n# not a heading\n\nprint('x')\n```\n\n### Deep\nLast line.\n",
    )
    assert doc.title == "Garden log"
    assert doc.metadata["tags"] == "plants, log"
    assert doc.metadata["private"] is True
    texts = [b.text for b in doc.blocks]
    assert "Intro about my tomatoes and Basil > Harvest." in texts
    assert not any("[[" in t for t in texts)
    callout = next(b for b in doc.blocks if "Water before 9" in b.text)
    assert "Tip: Morning" in callout.text and callout.section == ("Garden", "Watering")
    code = next(b for b in doc.blocks if "print('x')" in b.text)
    assert "# not a heading" in code.text and code.section == ("Garden", "Watering")
    deep = next(b for b in doc.blocks if b.text == "Last line.")
    assert deep.section == ("Garden", "Watering", "Deep")
    # Line numbers count the front matter: "Last line." is line 22 of the file.
    assert (deep.line_start, deep.line_end) == (22, 22)


def test_markdown_bad_front_matter_degrades_with_warning():
    doc = read("bad.md", "---\ntitle: [unclosed\n---\nBody text.\n")
    assert [b.text for b in doc.blocks] == ["Body text."]
    assert any("front matter" in w for w in doc.warnings)


def test_invalid_utf8_is_replaced_and_reported():
    doc = read("latin1.txt", "caf\xe9 au lait\n\nsecond".encode("latin-1"))
    assert doc.blocks[0].text == "caf\ufffd au lait"
    assert any("invalid UTF-8" in w for w in doc.warnings)


def test_binary_is_refused():
    with pytest.raises(UnreadableDocument, match="binary"):
        read("blob.md", b"\x00\x01\x02PNG")


def test_rst_sections_by_adornment_order():
    doc = read(
        "doc.rst",
        "=====\nTitle\n=====\n\nIntro.\n\nPart A\n------\n\nText A.\n\nSub\n~~~\n\nText sub.\n\n"
        "Part B\n------\n\nText B.\n",
    )
    sections = {b.text: b.section for b in doc.blocks}
    assert doc.title == "Title"
    assert sections["Text A."] == ("Title", "Part A")
    assert sections["Text sub."] == ("Title", "Part A", "Sub")
    assert sections["Text B."] == ("Title", "Part B")


def test_org_headings_keywords_drawers_and_blocks():
    doc = read(
        "todo.org",
        "#+TITLE: Plans\n#+FILETAGS: :work:home:\n* Work\n:PROPERTIES:\n:ID: 42\n:END:\nShip it.\n"
        "** Details :urgent:\n#+BEGIN_SRC sh\n\necho hi\n#+END_SRC\n* Home\nPaint.\n",
    )
    assert doc.title == "Plans" and doc.metadata["tags"] == "work, home"
    sections = {b.text: b.section for b in doc.blocks}
    assert sections["Ship it."] == ("Work",)
    assert sections["Paint."] == ("Home",)
    assert not any(":ID:" in t for t in sections)
    code = next(t for t in sections if "echo hi" in t)
    assert sections[code] == ("Work", "Details")


def test_pdf_pages_are_kept(tmp_path):
    reportlab = pytest.importorskip("reportlab.pdfgen.canvas")
    path = tmp_path / "manual.pdf"
    pdf = reportlab.Canvas(str(path))
    pdf.drawString(72, 720, "First page talks about anchors.")
    pdf.showPage()
    pdf.drawString(72, 720, "Second page talks about sails.")
    pdf.save()
    doc = read_document(path, path.read_bytes())
    pages = {b.page: b.text for b in doc.blocks}
    assert "anchors" in pages[1] and "sails" in pages[2]


def test_broken_pdf_is_refused_with_reason():
    with pytest.raises(UnreadableDocument, match="PDF"):
        read("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer <<>>\n%%EOF")
    with pytest.raises(UnreadableDocument, match="not a PDF"):
        read("fake.pdf", b"hello, I am text")
