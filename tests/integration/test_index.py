"""The notes index on real chromadb and the real embedder: incremental, bad input, crash safety."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SKIFF, run_skiff
from index_state import index_state as _index_state


def snapshot(index) -> dict:
    """Everything chromadb holds, in a comparable form."""
    got = index.collection.get(include=["documents", "metadatas", "embeddings"])
    return {
        chunk_id: (document, json.dumps(meta, sort_keys=True), np.round(np.asarray(vector), 5).tobytes())
        for chunk_id, document, meta, vector in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])
    }


def paths_in(index) -> set[str]:
    return {meta["path"] for meta in index.collection.get(include=["metadatas"])["metadatas"]}


def test_incremental_add_edit_delete(assistant, vault):
    first = assistant.index([vault])
    assert first.indexed == 12 and first.unchanged == 0 and not first.skipped
    assert first.chunks_total == assistant.notes.collection.count() > 12

    again = assistant.index([vault])
    assert (again.indexed, again.unchanged, again.removed, again.chunks_added) == (0, 12, 0, 0)

    edited = vault / "Plugins" / "Search.md"
    edited.write_text(edited.read_text() + "\n\n## Zebra facts\n\nZebras index their stripes weekly.\n")
    added = vault / "New note.md"
    added.write_text("# New\n\nA brand new note about lighthouses.\n")
    deleted = vault / "Plugins" / "Canvas.md"
    deleted.unlink()
    touched = vault / "Help and support.md"
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))  # new mtime, same bytes

    third = assistant.index([vault])
    assert (third.indexed, third.unchanged, third.removed) == (2, 10, 1)
    paths = paths_in(assistant.notes)
    assert str(deleted) not in paths and str(added) in paths
    hits = assistant.retrieve("how often do zebras index their stripes?")
    assert hits[0].path == str(edited) and "Zebras" in hits[0].text
    # No chunk of the edited file is left over from its old version.
    ids = [
        i
        for i, m in zip(*(lambda g: (g["ids"], g["metadatas"]))(assistant.notes.collection.get(include=["metadatas"])))
        if m["path"] == str(edited)
    ]
    assert len(ids) == len(set(ids)) == assistant.notes.manifest.records()[str(edited)].chunks


def test_reindex_without_paths_uses_known_roots(assistant, vault):
    assistant.index([vault])
    (vault / "Later.md").write_text("Added later: the moon is made of basalt.\n")
    summary = assistant.index()
    assert summary.indexed == 1 and summary.unchanged == 12


def test_bad_inputs_are_skipped_with_reasons_and_never_abort(assistant, tmp_path, monkeypatch):
    notes = tmp_path / "bad"
    notes.mkdir()
    (notes / "good.md").write_text("# Good\n\nThe only good note mentions quartz.\n")
    (notes / "binary.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(256))
    (notes / "latin1.txt").write_bytes("Caf\xe9 notes about espresso.".encode("latin-1"))
    (notes / "empty.md").write_text("")
    (notes / "blank.org").write_text("\n\n   \n")
    (notes / "huge.txt").write_text("big " * 400_000)  # 1.6 MB, over the 1 MB limit set below
    (notes / "broken.pdf").write_bytes(b"%PDF-1.4\n% truncated right here")
    (notes / "fake.pdf").write_text("not a pdf at all")
    (notes / "dangling.md").symlink_to(notes / "nowhere.md")
    (notes / "self.md").symlink_to(notes / "self.md")
    (notes / "loop").symlink_to(notes)
    os.mkfifo(notes / "pipe.md")
    (notes / "picture.png").write_bytes(b"\x89PNG")  # unsupported type: ignored, not an error
    monkeypatch.setattr(assistant.settings, "max_file_mb", 1.0)

    summary = assistant.index([notes])
    reasons = {Path(s["path"]).name: s["reason"] for s in summary.skipped}
    assert reasons["binary.md"].startswith("binary")
    assert reasons["empty.md"] == "empty file"
    assert reasons["blank.org"] == "empty file"
    assert reasons["huge.txt"].startswith("too large")
    assert "PDF" in reasons["broken.pdf"] and "not a PDF" in reasons["fake.pdf"]
    assert reasons["dangling.md"] == "broken symlink"
    assert reasons["self.md"] == "symlink loop"
    assert reasons["loop"].startswith("symlink loop")
    assert reasons["pipe.md"] == "not a regular file"
    assert "picture.png" not in reasons
    assert summary.indexed == 2  # good.md and latin1.txt (degraded, with a warning)
    assert any(w["path"].endswith("latin1.txt") and "UTF-8" in w["warning"] for w in summary.warnings)
    assert {Path(p).name for p in paths_in(assistant.notes)} == {"good.md", "latin1.txt"}

    # Skips are remembered: a re-run is instant and reports the same reasons.
    again = assistant.index([notes])
    assert again.indexed == 0 and again.unchanged == 2
    assert {Path(s["path"]).name: s["reason"] for s in again.skipped} == reasons


def test_a_boolean_title_is_text_and_a_chunker_bug_costs_only_its_file(assistant, tmp_path, monkeypatch):
    # `title: true` in front matter reached the chunker as a bool and aborted a 62,780-file run
    # at file 23,802 (bench/index_scale.py); found under load, not by the readers' properties.
    from skiff.local import notes_index

    notes = tmp_path / "titles"
    notes.mkdir()
    (notes / "bool title.md").write_text("---\ntitle: true\n---\nMalachite is a green copper carbonate.\n")
    (notes / "chunker bug.md").write_text("# Bug\n\nThis one meets a bug in the chunker.\n")
    (notes / "after.md").write_text("# After\n\nAzurite is a deep blue copper mineral.\n")
    real_chunker = notes_index.chunk_document

    def chunker_with_a_bug(document, title, *args):
        if title == "Bug":
            raise TypeError("a bug in the chunker")
        return real_chunker(document, title, *args)

    monkeypatch.setattr(notes_index, "chunk_document", chunker_with_a_bug)
    summary = assistant.index([notes])
    reasons = {Path(s["path"]).name: s["reason"] for s in summary.skipped}
    assert reasons == {"chunker bug.md": "could not be split into chunks (TypeError: a bug in the chunker)"}
    assert summary.indexed == 2
    titles = {meta["title"] for meta in assistant.notes.collection.get(include=["metadatas"])["metadatas"]}
    assert titles == {"true", "After"}


def test_unreadable_file_is_skipped(skiff_home, tmp_path):
    notes = tmp_path / "locked"
    notes.mkdir()
    (notes / "open.md").write_text("Readable note about kelp.\n")
    secret = notes / "secret.md"
    secret.write_text("Nobody may read this.\n")
    secret.chmod(0)
    command = [str(SKIFF), "index", str(notes), "--json"]
    if os.geteuid() == 0:
        # Root reads anything: drop the capabilities that override permission bits.
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv")
        dropped = "-dac_override,-dac_read_search"
        command = ["setpriv", "--bounding-set", dropped, "--inh-caps", dropped, *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert reasons["secret.md"].startswith("unreadable")
    assert summary["indexed"] == 1


def _start_indexing(vault: Path, env: dict, home: Path) -> tuple[subprocess.Popen, float]:
    """`skiff index` started in its own process, and the seconds until it began writing."""
    started = time.monotonic()
    process = subprocess.Popen([str(SKIFF), "index", str(vault)], env={**env, "SKIFF_HOME": str(home)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = started + 60
    while not (home / "data" / "index" / "manifest.sqlite3").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return process, time.monotonic() - started


def test_kill_9_during_indexing_then_rerun_equals_clean_run(vault, tmp_path, shared_cache):
    env = {**os.environ, "SKIFF_CACHE_DIR": str(shared_cache), "SKIFF_INDEX_BATCH_CHUNKS": "16"}
    clean_home = tmp_path / "clean"
    run_skiff("index", str(vault), env={**env, "SKIFF_HOME": str(clean_home)})  # also fills the embedder cache
    # How long this machine spends writing, timed on a second clean run (the first may have had
    # the embedder to export): the kills land inside it, however fast the machine.
    started = time.monotonic()
    timed, began = _start_indexing(vault, env, tmp_path / "timed")
    assert timed.wait(timeout=300) == 0
    writing_s = time.monotonic() - started - began
    expected = _index_state(clean_home, shared_cache)
    assert expected["chunks"]

    rng = random.Random(20261122)
    killed_mid_write = 0
    for trial in range(4):
        home = tmp_path / f"killed{trial}"
        process, _ = _start_indexing(vault, env, home)
        # Writing has begun: kill at a seeded random moment inside it.
        time.sleep(rng.uniform(0.05, 0.7) * writing_s)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL, "indexing finished before the kill: the trial proves nothing"
        interrupted = _index_state(home, shared_cache)
        killed_mid_write += interrupted != expected
        run_skiff("index", str(vault), env={**env, "SKIFF_HOME": str(home)})
        assert _index_state(home, shared_cache) == expected, f"trial {trial}"
    assert killed_mid_write >= 2, "most kills should land while the index is incomplete"


def test_every_chunk_is_read_back_page_by_page_in_id_order(assistant, vault, monkeypatch):
    """chromadb refuses one read of a whole large collection (143k chunks: "too many SQL
    variables"), so `skiff tune` reads the index a page at a time; a small page shows the paging
    loses and repeats nothing."""
    import skiff.local.chroma_store as chroma_store

    assistant.index([vault])
    got = assistant.notes.collection.get(include=["documents"])
    monkeypatch.setattr(chroma_store, "READ_PAGE", 7)
    chunks = list(assistant.notes.chunk_texts())
    assert len(got["ids"]) > 7 * 3
    assert [chunk.id for chunk in chunks] == sorted(got["ids"])
    assert {chunk.id: chunk.text for chunk in chunks} == dict(zip(got["ids"], got["documents"]))


def test_an_empty_index_and_an_emptied_one_search_to_nothing(assistant, vault):
    query = assistant.embedder.encode_query("lighthouses")
    assert assistant.notes.search(query, 5) == []
    assert assistant.notes.search(query, 5, with_embeddings=True) == []

    assistant.index([vault])
    hits = assistant.notes.search(query, 5, with_embeddings=True)
    assert len(hits) == 5 and all(hit.embedding is not None for hit in hits)

    for note in vault.rglob("*.md"):
        note.unlink()
    assert assistant.index([vault]).removed == 12
    assert assistant.notes.search(query, 5) == []
    assert assistant.retrieve("lighthouses") == []


def test_the_lexical_side_follows_every_change(assistant, vault):
    """BM25 rows (FTS5) are added, replaced and removed with their files, and carry the note's title
    and heading path, so a word found only in a heading still finds the chunk."""
    assistant.index([vault])
    notes = assistant.notes
    manifest_chunks = notes.manifest.done_chunks()
    assert notes.manifest.lexical_count() == manifest_chunks == notes.collection.count()
    edited = vault / "Plugins" / "Search.md"
    edited.write_text(edited.read_text() + "\n\n## Quokka settings\n\nTurn the dial twice.\n")
    (vault / "Plugins" / "Canvas.md").unlink()
    assistant.index([vault])
    hits = notes.lexical_search("quokka", 5)
    assert hits and hits[0].path == str(edited)  # "quokka" is only in the heading
    assert not notes.lexical_search("canvas JSON Canvas format", 50) or all(
        not h.path.endswith("Canvas.md") for h in notes.lexical_search("canvas JSON Canvas format", 50))
    assert notes.manifest.lexical_count() == notes.manifest.done_chunks() == notes.collection.count()
    fetched = notes.fetch([hits[0].id, "no-such-chunk"])
    assert [h.id for h in fetched] == [hits[0].id] and "Turn the dial" in fetched[0].text


def test_an_index_from_before_the_lexical_side_is_filled_in_on_open(skiff_home, vault):
    """Upgrading skiff must not cost a re-embedding: the lexical rows are rebuilt from chromadb."""
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    first = Assistant(load_settings())
    first.index([vault])
    expected = {h.id for h in first.notes.lexical_search("daily notes template", 20)}
    with first.notes.manifest.db as db:
        db.execute("DELETE FROM lexical")
        db.execute("DELETE FROM lexical_chunks")
    first.close()
    reopened = Assistant(load_settings())
    try:
        assert {h.id for h in reopened.notes.lexical_search("daily notes template", 20)} == expected
        assert reopened.notes.manifest.lexical_count() == reopened.notes.manifest.done_chunks()
    finally:
        reopened.close()
