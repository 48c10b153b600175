"""Hostile notes folders through real indexing (`skiff index` in a subprocess, the real embedder
and chromadb): zip and PDF decompression bombs, billion-laughs Markdown, 10,000-level nesting, a 100 MB line,
NUL bytes, invalid UTF-8, escape sequences and file names no tool expects. Every bad file is
skipped or degraded with a reason, none aborts the run, the good notes beside them are indexed and
found, and the run's memory and time stay bounded.

test_index.py::test_bad_inputs_are_skipped_with_reasons_and_never_abort covers the ordinary bad
files (binary, empty, too large, broken or fake PDF, symlink loops, FIFOs); this file the hostile
ones.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import SKIFF
from pdf_files import pdf_file

# What chromadb and the terminal must never get from a note.
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
PEAK_RSS_BOUND_MB = 1536
CPU_SECONDS_BOUND = 240  # ~40 s on an idle two-core machine
WALL_TIMEOUT = 1800  # only against a hang: a busy machine stretches wall time without limit


def pdf(page_streams: list[bytes], shared: bool = False, font_extra: bytes = b"", extra: list[bytes] = (),
        compressed: bool = False) -> bytes:
    """A well-formed PDF whose content streams are Flate-compressed twice (as a bomb's are);
    compressed: the streams given are that already."""
    streams = page_streams[:1] if shared else page_streams
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica" + font_extra + b" >>", *extra]
    first_stream = len(objects) + 1
    for body in streams:
        twice = body if compressed else zlib.compress(zlib.compress(body, 9), 9)
        objects.append(b"<< /Length %d /Filter [/FlateDecode /FlateDecode] >>\nstream\n" % len(twice)
                       + twice + b"\nendstream")
    first_page = len(objects) + 1
    for number in range(len(page_streams)):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % (first_stream + (0 if shared else number)))
    kids = b" ".join(b"%d 0 R" % (first_page + n) for n in range(len(page_streams)))
    objects[1] = b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % len(page_streams)
    return pdf_file(objects)


def flate_bomb(decompressed_mb: int) -> bytes:
    """One page whose content stream inflates to `decompressed_mb` MB from a few KB. Built
    without compressing a gigabyte: after a full flush deflate restarts, so one compressed
    megabyte of spaces is repeated. Its checksum is never reached (a reader stops long before)."""
    inner = zlib.compressobj(9)
    head = inner.compress(b"BT /F1 12 Tf 72 720 Td (Bomb text) Tj ET\n") + inner.flush(zlib.Z_FULL_FLUSH)
    megabyte = inner.compress(b" " * (1 << 20)) + inner.flush(zlib.Z_FULL_FLUSH)
    stream = head + megabyte * decompressed_mb + inner.flush()
    return pdf([zlib.compress(stream, 9)], compressed=True)


def billion_laughs_markdown() -> str:
    """Ten levels of reference links and footnotes, each naming the one below nine times: 10^9
    expansions for a parser that resolves them, plus YAML aliases in the front matter."""
    yaml_levels = [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    yaml_levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines = ["---", *yaml_levels, "tags: *l9", "private: *l9", "---", "# Laughs", ""]
    lines.append("[lol0]: https://example.org/lol")
    for level in range(1, 10):
        lines.append(f"[lol{level}]: " + " ".join(f"[lol{level - 1}][lol{level - 1}]" for _ in range(9)))
        lines.append(f"[^f{level}]: " + " ".join(f"[^f{level - 1}]" for _ in range(9)))
    lines += ["", "Laughing gas is nitrous oxide, used by dentists. [lol9][lol9] [^f9]", ""]
    return "\n".join(lines)


GOOD = {
    # name: (text, a question its text answers)
    "good.md": ("# Minerals\n\nQuartz is a hard mineral made of silicon and oxygen atoms.\n", "what is quartz made of"),
    "good.txt": ("Lighthouses guide ships with a rotating beam of light at night.\n", "how do lighthouses guide ships"),
    "good.org": (
        "* Bees\nHoneybees communicate the direction of flowers with a waggle dance.\n",
        "how do honeybees tell where flowers are",
    ),
    "new\nline name.md": ("Topaz gems are often treated with heat to turn them blue.\n", "how is topaz made blue"),
    "tab\tname.md": (
        "Beryl is the mineral family of emerald and aquamarine.\n",
        "which mineral family includes emerald",
    ),
    "\u202eevil\u202c.md": ("Onyx is a banded variety of chalcedony.\n", "what is onyx a variety of"),
    "e\u0301mo\U0001f600 \u05e9\u05dc\u05d5\u05dd.md": (
        "Opal contains up to twenty percent water in its structure.\n",
        "how much water does opal contain",
    ),
    "\x1b[31mred.md": ("Garnet is the birthstone for the month of January.\n", "which birthstone is for january"),
}


def zip_bomb(inflated_bytes: int) -> bytes:
    """A real zip archive whose one member inflates to `inflated_bytes` of zeros."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("zeros.txt", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(inflated_bytes // len(block)):
                member.write(block)
    return buffer.getvalue()


def build_folder(notes: Path) -> dict[str, str]:
    """The hostile folder; returns name -> what must become of it ("indexed", or a skip reason's
    start)."""
    notes.mkdir()
    expect: dict[str, str] = {}
    for name, (text, _question) in GOOD.items():
        (notes / name).write_text(text, encoding="utf-8")
        expect[name] = "indexed"
    # Compression bombs: a stream that inflates past pypdf's limit, and 30 pages sharing one that
    # yields 1 MB of text each from a file of a few KB.
    (notes / "flate bomb.pdf").write_bytes(flate_bomb(1024))
    expect["flate bomb.pdf"] = "no text to index"
    words = b"lorem ipsum dolor sit amet " * 40_000
    (notes / "shared stream bomb.pdf").write_bytes(
        pdf([b"BT /F1 12 Tf 72 720 Td (" + words + b") Tj ET"] * 30, shared=True))
    expect["shared stream bomb.pdf"] = "indexed"
    # A ToUnicode map that yields a lone surrogate, an ESC and a NUL (chromadb refused the batch).
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap 1 begincodespacerange <00> <FF> "
            b"endcodespacerange 3 beginbfchar <41> <D800> <42> <001B> <43> <0000> endbfchar endcmap end end")
    cmap_stream = b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream"
    (notes / "surrogate font.pdf").write_bytes(
        pdf([b"BT /F1 12 Tf 72 720 Td (ABC Jade is a name for two minerals, jadeite and nephrite.) Tj ET"],
            font_extra=b" /ToUnicode 4 0 R", extra=[cmap_stream]))
    expect["surrogate font.pdf"] = "indexed"
    # Zip bombs: 64 MB of zeros deflated to a few KB, renamed to look like notes, and one left as a
    # .zip, which is no note format: skiff must never inflate any of them.
    bomb = zip_bomb(64 << 20)
    (notes / "zip bomb.md").write_bytes(bomb)
    expect["zip bomb.md"] = "binary"
    (notes / "zip bomb.pdf").write_bytes(bomb)
    expect["zip bomb.pdf"] = "not a PDF"
    (notes / "archive.zip").write_bytes(bomb)
    # A startxref of 30 digits: pypdf's OverflowError aborted the whole run (found by fuzzing).
    valid = pdf([b"BT /F1 12 Tf (x) Tj ET"])
    (notes / "absurd startxref.pdf").write_bytes(valid[: valid.rindex(b"startxref")] + b"startxref\n" + b"9" * 30
                                                 + b"\n%%EOF\n")
    expect["absurd startxref.pdf"] = "broken PDF (OverflowError"
    # Markup that explodes in a naive parser.
    (notes / "billion laughs.md").write_text(billion_laughs_markdown())
    expect["billion laughs.md"] = "indexed"
    (notes / "deep nesting.md").write_text(
        "- " * 10_000 + "deep list item\n\n" + ">" * 10_000 + " deep quote\n\n" + "[" * 10_000 + "]" * 10_000
        + "\n\n" + "#" * 10_000 + " not a heading\n\n" + "\n".join(" " * i + "- level" for i in range(0, 2000, 7)))
    expect["deep nesting.md"] = "indexed"
    (notes / "deep nesting.org").write_text("*" * 10_000 + " deep heading\n" + ":PROPERTIES:\n" * 5_000 + "body\n")
    expect["deep nesting.org"] = "indexed"
    (notes / "huge int front matter.md").write_text("---\ntitle: " + "9" * 5000 + "\n---\nA body under it.\n")
    expect["huge int front matter.md"] = "indexed"
    # 300 KB of one "word" (a DNA sequence, a hex dump): every 500-character piece is a different
    # text that the embedder reads as the same single unknown token, so hundreds of equal vectors.
    bases = "".join(random.Random(7).choices("ACGT", k=300_000))
    (notes / "sequence.md").write_text(f"# Plasmid\n\n{bases}\n")
    expect["sequence.md"] = "indexed"
    (notes / "long heading.md").write_text("# x" + " " * 500_000 + "y\n\nUnder a padded heading.\n")
    expect["long heading.md"] = "indexed"
    # A 100 MB single line (over the 20 MB default limit: refused before it is read).
    with open(notes / "100 MB line.txt", "wb") as handle:
        chunk = b"word " * (1 << 18)
        handle.writelines(chunk for _ in range(100 * (1 << 20) // len(chunk)))
    expect["100 MB line.txt"] = "too large"
    # NUL bytes and invalid UTF-8.
    (notes / "nul at start.md").write_bytes(b"\x00\x00binary-looking")
    expect["nul at start.md"] = "binary"
    (notes / "nul later.txt").write_bytes(b"padding " * 1100 + b"\x00 Jasper is an opaque quartz.\x00\n")
    expect["nul later.txt"] = "indexed"
    (notes / "invalid utf8.md").write_bytes(b"overlong \xc0\xaf, surrogate \xed\xa0\x80, cut \xe2\x82\n\nAmber is "
                                            b"fossilized tree resin.\n\xf0\x9f")
    expect["invalid utf8.md"] = "indexed"
    (notes / "escapes.md").write_text("\x1b]0;pwned\x07\x1b[2J\x9b31m Turquoise is a copper mineral.\n")
    expect["escapes.md"] = "indexed"
    # Names that are not UTF-8: a file, and a folder with a good note inside.
    os.close(os.open(os.fsencode(str(notes)) + b"/bad\xffname.md", os.O_WRONLY | os.O_CREAT, 0o644))
    Path(os.fsdecode(os.fsencode(str(notes)) + b"/bad\xffname.md")).write_text("Never indexed.\n")
    expect["bad\ufffdname.md"] = "file name is not valid UTF-8"
    folder = os.fsencode(str(notes)) + b"/dir\xfe"
    os.mkdir(folder)
    with open(folder + b"/inside.md", "w") as handle:
        handle.write("Hidden behind a bad folder name.\n")
    expect["dir\ufffd"] = "file name is not valid UTF-8"
    return expect


def run_index(notes: Path, env: dict[str, str]) -> tuple[dict, int, float]:
    """`skiff index --json` under a parent that reports its children's peak RSS (kB) and CPU
    seconds: the pytest process's own earlier children do not count, and CPU time, unlike wall
    time, does not grow when other work shares the machine."""
    wrapper = ("import resource, subprocess, sys\n"
               "with open(sys.argv[1], 'w') as out:\n"
               "    code = subprocess.run(sys.argv[2:], stdout=out, check=False).returncode\n"
               "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
               "print(code, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n")
    summary_file = notes.parent / "summary.json"
    result = subprocess.run(
        [sys.executable, "-c", wrapper, str(summary_file), str(SKIFF), "index", str(notes), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=WALL_TIMEOUT,
        check=False,
    )
    code, peak_kb, cpu_seconds = result.stdout.split()
    summary_text = summary_file.read_text()
    assert code == "0", f"skiff index exited {code}\n{summary_text[-3000:]}\n{result.stderr[-5000:]}"
    return json.loads(summary_text), int(peak_kb), float(cpu_seconds)


@pytest.fixture
def warm_embedder(shared_cache):
    # Export the embedder to ONNX now, so its one-off export is not part of the measured run.
    from skiff.local.embedder import Embedder

    Embedder(shared_cache).encode(["warm"])


def test_a_hostile_folder_is_indexed_with_reasons_and_bounded_memory(skiff_home, tmp_path, warm_embedder):
    notes = tmp_path / "hostile"
    expect = build_folder(notes)
    summary, peak_kb, cpu_seconds = run_index(notes, os.environ.copy())
    (notes / "100 MB line.txt").unlink()  # 100 MB of disk back now

    # Nothing aborted the run and every file is accounted for, with a reason when it was not taken.
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    warnings: dict[str, list[str]] = {}
    for item in summary["warnings"]:
        warnings.setdefault(Path(item["path"]).name, []).append(item["warning"])
    for name, outcome in expect.items():
        if outcome == "indexed":
            assert name not in skipped, (name, skipped.get(name), warnings.get(name))
        else:
            assert skipped.get(name, "").startswith(outcome), (name, skipped.get(name), warnings.get(name))
    assert set(skipped) == {n for n, o in expect.items() if o != "indexed"}, skipped
    assert summary["indexed"] == sum(o == "indexed" for o in expect.values())

    # Bounded: the 100 MB file was never read, the bombs were capped.
    assert peak_kb / 1024 < PEAK_RSS_BOUND_MB, f"peak RSS {peak_kb / 1024:.0f} MB"
    assert cpu_seconds < CPU_SECONDS_BOUND, f"{cpu_seconds:.0f} CPU s"
    print(f"\nhostile folder: {len(expect)} files, {summary['chunks_total']} chunks, peak RSS "
          f"{peak_kb / 1024:.0f} MB, {cpu_seconds:.1f} CPU s, {summary['seconds']:.1f} s wall")

    # The index is whole: every chunk clean and of a file that is there, the manifest agrees with
    # chromadb, each good note is found by a question its text answers, and a re-run has nothing to do.
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    assistant = Assistant(load_settings())
    try:
        got = assistant.notes.collection.get(include=["documents", "metadatas"])
        assert len(got["ids"]) == summary["chunks_total"] == assistant.notes.totals()[1]
        for document, meta in zip(got["documents"], got["metadatas"]):
            assert document and not FORBIDDEN.search(document), (meta["path"], document[:200])
            assert not FORBIDDEN.search(meta["title"]), meta
            assert os.path.exists(meta["path"]), meta
        bomb_text = sum(len(d) for d, m in zip(got["documents"], got["metadatas"])
                        if m["path"].endswith("shared stream bomb.pdf"))
        assert bomb_text <= 256 * 1024, bomb_text
        for name, (_text, question) in GOOD.items():
            hits = assistant.notes.search(assistant.embedder.encode_query(question), 3)
            assert str(notes / name) in [h.path for h in hits], (name, [(h.path, h.text[:60]) for h in hits])
        for needle in ("Jade is a name", "Jasper is an opaque quartz", "Amber is fossilized", "Turquoise is a copper"):
            assert any(needle in d for d in got["documents"]), needle
    finally:
        assistant.close()

    # Degraded files say why.
    assert "could not be extracted (LimitReachedError" in skipped["flate bomb.pdf"]
    assert any("decompression bomb" in w for w in warnings["shared stream bomb.pdf"])
    # Repeats are embedded once, said so: hundreds of equal vectors broke chromadb's HNSW search,
    # which then returned them for every question and missed the good notes.
    assert any("repeated chunk(s) left out" in w for w in warnings["shared stream bomb.pdf"])
    assert any("embed the same as another chunk" in w for w in warnings["sequence.md"])
    assert any("control characters" in w for w in warnings["surrogate font.pdf"])
    assert any("control character" in w for w in warnings["nul later.txt"])
    assert any("control character" in w for w in warnings["escapes.md"])
    assert any("invalid UTF-8" in w for w in warnings["invalid utf8.md"])
    assert any("front matter" in w for w in warnings["huge int front matter.md"])

    again, _, _ = run_index(notes, os.environ.copy())
    assert again["indexed"] == 0 and again["unchanged"] == summary["indexed"], again
