"""Property-based tests (hypothesis) of what skiff reads from outside: note files through the
readers and their blocks through the chunker (the config file and SKIFF_* variables:
test_config_properties.py). Deterministic (derandomize=True, no example database), so CI sees the same examples
every run; the example counts keep the file well under a minute on two cores.
"""

from __future__ import annotations

import re
import sys
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from skiff.local.chunking import SPECIAL_TOKENS, chunk_document
from skiff.local.embedder import Embedder
from skiff.local.readers import (
    Block,
    Document,
    UnreadableDocument,
    decode_text,
    read_document,
)
from skiff.local.readers.pdf import MIN_TEXT_CHARS, TEXT_CHARS_PER_BYTE

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "fuzz"))
from pdf_files import pdf_file  # noqa: E402 - fuzz/ is on sys.path only from the line above
from readers_fuzz import FORBIDDEN, SUFFIXES, check_all_readers  # noqa: E402

from conftest import deterministic  # noqa: E402

SEEDS = REPO / "fuzz" / "corpus" / "readers"


# -- readers -----------------------------------------------------------------------------------

# Pieces of every syntax the readers know, and of what breaks naive parsers.
FRAGMENTS = [
    "# ", "## ", "###### ", "#######", "#", " #", "```", "````py", "~~~", "---", "...", "> ", "> [!note]",
    "> [!tip]- Title", "[[", "]]", "[[a|b]]", "[[Note#Head]]", "[[]]", "|", "![[x.png]]", "* ", "** ", ":tag:",
    ":PROPERTIES:", ":END:", "#+TITLE: ", "#+FILETAGS: :a:b:", "#+BEGIN_SRC", "#+END_SRC", "=====", "-----",
    "~~~~~", "title: ", "tags: [a, b]", "private: true", "\t", "   ", "\u200f", "\u202e", "e\u0301", "\U0001f600",
    "\ufeff", "字", "\x00", "\x1b[2J", "\x07", "\r", "\r\n", "\u2028", "\x85", "word", "Sentence. Another!",
]
line = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=6).map("".join)
marked_text = st.lists(line, max_size=30).map("\n".join)
front_matter = st.lists(
    st.sampled_from(["title: T", "tags: [a, 1, 2.5, [x]]", "private: yes", "a: &a [x, y]", "b: *a", "title: *a",
                     "description: 2024-05-01", "title: {a: b}", "x: [", "private: 1", "title: true",
                     "title: no", "tags: [yes, 2]", "description: off", "private: false"]), max_size=4,
).map(lambda lines: "---\n" + "\n".join(lines) + "\n---\n")
documents_bytes = st.one_of(
    st.binary(max_size=1500),
    marked_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.tuples(front_matter, marked_text).map(lambda p: "".join(p).encode("utf-8", "surrogatepass")),
    st.tuples(marked_text, st.binary(max_size=16), marked_text).map(
        lambda p: p[0].encode("utf-8", "surrogatepass") + p[1] + p[2].encode("utf-8", "surrogatepass")),
)


@deterministic(400)
@given(data=documents_bytes)
@example(data=b"> [!note]\n> body line\n")  # the callout used to swallow its newline
@example(data=b"* H\ntext\n:PROPERTIES:\n:ID: 1\n:END:\nmore\n")  # an Org drawer inside a paragraph
@example(data=b"[[a\nb|c]]\n")  # a wikilink across lines took the newline with it
@example(data=b"```\ncode\n\n\n")  # an unclosed fence's blank tail was in its span
@example(data=b"* H\n:PROPERTIES:\nnever closed\n\nmore text\n")  # an unclosed drawer hid the rest
@example(data=b"---\ntitle: true\n---\nbody\n")  # a bool title aborted indexing at the chunker
def test_readers_raise_only_unreadable_and_keep_their_invariants(data):
    # Every supported suffix: only UnreadableDocument escapes; spans, order and text hold.
    check_all_readers(data)


@deterministic(200)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=300))
def test_decoding_loses_nothing_of_clean_utf8(text):
    if text.startswith("\ufeff") or any(0x80 <= ord(c) <= 0x9F for c in text):
        text = text.lstrip("\ufeff").translate({c: None for c in range(0x80, 0xA0)})
    assert decode_text(text.encode(), []) == text


@deterministic(300)
@given(data=st.binary(max_size=600) | documents_bytes)
def test_decoded_text_holds_no_controls_nor_carriage_returns(data):
    warnings: list[str] = []
    try:
        text = decode_text(data, warnings)
    except UnreadableDocument as error:
        assert b"\x00" in data[:8192] and "binary" in str(error)
        return
    assert "\r" not in text and not FORBIDDEN.search(text)
    if re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", data):
        assert any("control character" in w for w in warnings), warnings


HOSTILE_FRONT_MATTER = {
    "int past 4300 digits": "title: " + "9" * 5000,
    "int in a list": "tags: [" + "9" * 5000 + "]",
    "bad timestamp": "title: 2024-13-45",
    "nested 1500 deep": "title: " + "[" * 1500 + "]" * 1500,
    "billion laughs": "\n".join(
        [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
        + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
        + ["private: *l9", "tags: *l9", "title: *l9"]
    ),
    "unhashable key": "? [a]\n: b",
    "python tag": "title: !!python/object/apply:os.system [echo]",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FRONT_MATTER))
def test_hostile_front_matter_is_ignored_with_a_warning_and_the_body_kept(case):
    data = f"---\n{HOSTILE_FRONT_MATTER[case]}\n---\n# Body\n\nThe body survives.\n".encode()
    started = time.perf_counter()
    doc = read_document(Path("hostile.md"), data)
    assert time.perf_counter() - started < 10
    assert [b.text for b in doc.blocks] == ["The body survives."]
    assert doc.title == "Body" and "private" not in doc.metadata
    if case != "billion laughs":  # valid YAML: its values are ignored for not being scalars
        assert any("front matter" in w for w in doc.warnings), doc.warnings
    check_all_readers(data)


@pytest.mark.parametrize("name,line", [("long.md", b"# x" + b" " * 200_000 + b"y"),
                                       ("long.org", b"* x" + b" " * 200_000 + b"y"),
                                       ("long.org", b"* x" + b" :t" * 100_000 + b" y")])
def test_heading_lines_are_read_in_linear_time(name, line):
    # The heading regexes backtracked quadratically: this line took minutes (20 MB: days).
    started = time.perf_counter()
    doc = read_document(Path(name), line + b"\n\nbody\n")
    assert time.perf_counter() - started < 5
    assert doc.blocks[0].text == "body" and doc.blocks[0].section[0].startswith("x")


# -- PDF ---------------------------------------------------------------------------------------


def make_pdf(page_streams: list[bytes], cmap: bytes | None = None, info: bytes = b"<< /Title (T) >>",
             shared: bool = False, compress: bool = False) -> bytes:
    """A small, well-formed PDF: one content stream per page, or one drawn by every page (shared);
    compress: each stream Flate-compressed twice, as a decompression bomb would be."""
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica" + (b" /ToUnicode 5 0 R" if cmap else b"") + b" >>"
    streams = page_streams[:1] if shared else page_streams
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", info, font, _stream(cmap or b"")]
    first_stream = len(objects) + 1
    objects += [_stream(s, compress) for s in streams]
    first_page = len(objects) + 1
    for number in range(len(page_streams)):
        content = first_stream + (0 if shared else number)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 4 0 R >> >> >>" % content)
    kids = b" ".join(b"%d 0 R" % (first_page + n) for n in range(len(page_streams)))
    objects[1] = b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(page_streams)
    return pdf_file(objects, b" /Info 3 0 R")


def _stream(body: bytes, compress: bool = False) -> bytes:
    filters = b""
    if compress:
        body, filters = zlib.compress(zlib.compress(body, 9), 9), b" /Filter [/FlateDecode /FlateDecode]"
    return b"<< /Length %d%s >>\nstream\n" % (len(body), filters) + body + b"\nendstream"


def _pdf_string(text: bytes) -> bytes:
    return b"(" + text.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


operators = st.one_of(
    st.binary(max_size=40).map(lambda b: _pdf_string(b) + b" Tj"),
    st.binary(max_size=20).map(lambda b: b"<" + b.hex().encode() + b"> Tj"),
    st.sampled_from(
        [
            b"T*",
            b"0 -14 Td",
            b"ET BT",
            b"/F1 12 Tf",
            b"[(a) -250 (b)] TJ",
            b"(x) '",
            b"q 1 0 0 1 0 0 cm Q",
            b"/F9 12 Tf",
            b"1 0 0 1 72 700 Tm",
            b"(\\\\) Tj",
            b"<FEFF> Tj",
            b")",
            b"<<",
            b"[",
            b"9999999999 Tz",
        ]
    ),
)
page_stream = st.lists(operators, max_size=12).map(lambda ops: b"BT /F1 12 Tf 72 720 Td " + b"\n".join(ops) + b" ET")
# A ToUnicode map can send a code anywhere, a lone surrogate and control characters included.
cmaps = st.none() | st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF)), min_size=1, max_size=6).map(
    lambda pairs: b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap 1 begincodespacerange <00> <FF> "
    b"endcodespacerange %d beginbfchar " % len(pairs)
    + b" ".join(b"<%02X> <%04X>" % pair for pair in pairs) + b" endbfchar endcmap end end")
pdf_titles = st.binary(max_size=30).map(lambda b: b"<< /Title " + _pdf_string(b) + b" >>")


@deterministic(120)
@given(pages=st.lists(page_stream, min_size=1, max_size=3), cmap=cmaps, info=pdf_titles)
@example(pages=[b"BT /F1 12 Tf (xABCx) Tj ET"], cmap=b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap "
         b"1 begincodespacerange <00> <FF> endcodespacerange 3 beginbfchar <41> <D800> <42> <001B> <43> <0000> "
         b"endbfchar endcmap end end", info=b"<< /Title <FEFFD800> >>")  # a lone surrogate broke chromadb
def test_generated_pdfs_keep_the_invariants(pages, cmap, info):
    data = make_pdf(pages, cmap, info)
    check_all_readers(data)
    doc = read_document(Path("g.pdf"), data)
    for block in doc.blocks:
        block.text.encode("utf-8")  # what chromadb and SQLite need


@deterministic(150)
@given(cuts=st.lists(st.tuples(st.integers(0, 1 << 16), st.binary(min_size=0, max_size=8)), min_size=1, max_size=4),
       truncate=st.none() | st.integers(9, 1 << 16))
def test_mutated_pdfs_raise_only_unreadable(cuts, truncate):
    data = bytearray((SEEDS / "manual.pdf").read_bytes())
    for position, replacement in cuts:
        position %= len(data)
        data[position : position + len(replacement)] = replacement
    check_all_readers(bytes(data[:truncate]))


def test_a_pdf_with_an_absurd_startxref_is_unreadable():
    # Found by fuzzing: pypdf raised OverflowError, which escaped the reader and aborted indexing.
    data = re.sub(rb"startxref\n\d+", b"startxref\n" + b"9" * 30, make_pdf([b"BT /F1 12 Tf (x) Tj ET"]))
    with pytest.raises(UnreadableDocument, match="broken PDF"):
        read_document(Path("absurd.pdf"), data)
    check_all_readers((SEEDS / "regress-startxref-overflow.pdf").read_bytes())


def test_pdf_text_is_bounded_by_the_file_size():
    # 30 pages drawing one 1 MB string: 30 MB of text from a file of a few KB, all of it chunked
    # and embedded, before the text budget.
    words = b"lorem ipsum dolor sit amet " * 40_000
    data = make_pdf([b"BT /F1 12 Tf 72 720 Td (" + words + b") Tj ET"] * 30, shared=True, compress=True)
    assert len(data) < 8192
    doc = read_document(Path("bomb.pdf"), data)
    allowed = max(MIN_TEXT_CHARS, TEXT_CHARS_PER_BYTE * len(data))
    assert sum(len(b.text) for b in doc.blocks) <= allowed
    assert any("decompression bomb" in w for w in doc.warnings), doc.warnings
    assert doc.blocks[0].text.startswith("lorem ipsum")
    check_all_readers(data)


def test_pdf_extraction_stops_at_its_cpu_budget(monkeypatch):
    # Pages sharing one stream of drawing operators cost ~1 CPU second each and give no text: a
    # 2 KB file of 1,000 such pages took a quarter of an hour before the budget.
    import skiff.local.readers.pdf as pdf_reader

    monkeypatch.setattr(pdf_reader, "EXTRACT_CPU_SECONDS", 0.2)
    heavy = b"BT /F1 12 Tf 72 720 Td (page text) Tj ET\n" + b"0 0 m 1 1 l S\n" * 30_000
    data = make_pdf([heavy] * 40, shared=True, compress=True)
    assert len(data) < 8192
    doc = read_document(Path("slow.pdf"), data)
    assert any("CPU seconds" in w for w in doc.warnings), doc.warnings
    assert doc.blocks[0].text == "page text" and max(b.page for b in doc.blocks) < 40


# -- chunker -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    # Token counting needs only the embedder's tokenizer (as in test_chunking.py).
    return Embedder(tmp_path_factory.mktemp("cache"))


words = st.one_of(
    st.sampled_from(["the", "note", "Anchor", "sails.", "é", "naïve", "字字", "\U0001f600", "e\u0301", "x" * 150,
                     "ab" * 70, "https://example.org/a/b?c=d", "C++", "...", "—", "\u200f", "1234567890" * 3]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=30),
)
separators = st.sampled_from([" ", " ", " ", "\n", "  ", "\t", ". ", "\n\n"])
block_text = st.lists(st.tuples(words, separators), min_size=1, max_size=120).map(
    lambda pairs: "".join(w + s for w, s in pairs).strip())
sections = st.lists(st.text(max_size=20) | st.just("h" * 400), max_size=3).map(tuple)


@st.composite
def documents(draw):
    """Blocks as readers make them: in order, each on the lines its text has, grouped under
    sections (and pages)."""
    blocks = []
    line = draw(st.integers(1, 5))
    section, page = draw(sections), draw(st.none() | st.integers(1, 3))
    for _ in range(draw(st.integers(1, 10))):
        if draw(st.integers(0, 3)) == 0:
            section, page = draw(sections), page if page is None else page + draw(st.integers(0, 1))
        text = draw(block_text)
        if not text:
            continue
        end = line + text.count("\n")
        blocks.append(Block(text, section, line, end, page))
        line = end + 1 + draw(st.integers(0, 3))
    return Document("markdown", blocks)


def groups_of(doc: Document) -> list[list[Block]]:
    groups: list[list[Block]] = []
    for block in doc.blocks:
        if groups and (block.section, block.page) == (groups[-1][0].section, groups[-1][0].page):
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def squeeze(text: str) -> str:
    return "".join(text.split())


@deterministic(250)
@given(doc=documents(), title=st.text(max_size=40) | st.just("T" * 2000), max_tokens=st.integers(32, 256))
def test_chunks_fit_the_bound_stay_in_their_section_and_lose_no_text(counter, doc, title, max_tokens):
    chunks = chunk_document(doc, title, counter, max_tokens)
    for chunk in chunks:
        assert counter.count_tokens(chunk.embed_text) + SPECIAL_TOKENS <= max_tokens, chunk
        assert chunk.text and chunk.text == chunk.text.strip()
        assert chunk.embed_text.endswith(chunk.text)
        assert 1 <= chunk.line_start <= chunk.line_end
    # Chunks come group by group (a group: consecutive blocks under one heading and page); none
    # crosses into another group, and a group's chunks hold all of its text, in order.
    remaining = list(chunks)
    for group in groups_of(doc):
        taken = []
        while remaining and (remaining[0].section, remaining[0].page) == (group[0].section, group[0].page):
            taken.append(remaining.pop(0))
        assert taken, ("a group without chunks", group)
        for chunk in taken:
            assert group[0].line_start <= chunk.line_start <= chunk.line_end <= group[-1].line_end, (chunk, group)
        assert squeeze("".join(c.text for c in taken)) == squeeze("".join(b.text for b in group))
    assert not remaining
    # Each chunk's text is on the lines it names.
    lines: dict[int, str] = {}
    for block in doc.blocks:
        for offset, text in enumerate(block.text.split("\n")):
            lines[block.line_start + offset] = text
    for chunk in chunks:
        source = "".join(lines.get(n, "") for n in range(chunk.line_start, chunk.line_end + 1))
        assert squeeze(chunk.text) in squeeze(source), chunk


@deterministic(120)
@given(line_words=st.lists(st.integers(1, 60), min_size=1, max_size=40), max_tokens=st.integers(32, 128),
       blank_every=st.integers(2, 9))
def test_chunk_line_numbers_are_exact(counter, line_words, max_tokens, blank_every):
    # Line n holds only the word "wN", so the words of a chunk say which lines it covers: its
    # first and last line must be exactly those (a cut right after a newline used to claim the
    # next line too).
    text_lines = []
    for number, count in enumerate(line_words, start=1):
        text_lines.append("" if number % blank_every == 0 else " ".join([f"w{number}"] * count))
    data = "\n".join(text_lines).encode()
    chunks = chunk_document(read_document(Path("n.txt"), data), "n", counter, max_tokens)
    assert chunks
    for chunk in chunks:
        numbers = [int(word[1:]) for word in chunk.text.split()]
        assert (chunk.line_start, chunk.line_end) == (min(numbers), max(numbers)), chunk


def test_all_readers_are_covered():
    assert set(SUFFIXES) == {".md", ".markdown", ".txt", ".text", ".rst", ".org", ".pdf"}
