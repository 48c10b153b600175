"""Damaged files under skiff's data folder: skiff says what happened, keeps the damaged copy as a
backup, rebuilds what can be rebuilt, starts normally, and never touches the notes.

Every case runs the real `skiff` executable on a copy of one healthy home (indexed notes, answers,
feedback) with one kind of damage applied."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import fast_model_path, run_skiff
from index_state import index_state

QUESTION = "How do I create a daily note from a template?"


def notes_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory, shared_cache):
    """A home with the vault slice indexed, three answers and two verdicts the router learned."""
    from conftest import VAULT, VAULT_SUBSET

    if not VAULT.is_dir():
        pytest.skip("../shared/data/notes is not beside the repository")
    root = tmp_path_factory.mktemp("healthy")
    notes = root / "notes"
    for relative in VAULT_SUBSET:
        (notes / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(VAULT / relative, notes / relative)
    home = root / "home"
    env = environment(home, shared_cache)
    run_skiff("index", str(notes), env=env)
    for question, verdict in [(QUESTION, "good"), ("What is a callout?", "bad"), ("How do I embed a file?", None)]:
        run_skiff("ask", "--max-tokens", "8", question, env=env)
        if verdict:
            run_skiff("feedback", verdict, env=env)
    return {"home": home, "notes": notes, "cache": shared_cache, "index": index_state(home, shared_cache),
            "digest": notes_digest(notes)}


def environment(home: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    return {**env, "SKIFF_HOME": str(home), "SKIFF_CACHE_DIR": str(cache), "SKIFF_OFFLINE": "true",
            "SKIFF_MODEL_PATH": str(fast_model_path())}


@pytest.fixture
def damaged(healthy, tmp_path):
    """A copy of the healthy home (the notes stay where they are: skiff indexed them there)."""
    home = tmp_path / "home"
    shutil.copytree(healthy["home"], home, symlinks=True)
    return home


def garbage(path: Path, size: int = 8192) -> None:
    path.write_bytes(np.random.default_rng(7).bytes(size))


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(max(1024, path.stat().st_size // 2))


def backups(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".damaged-" in p.name)


def ask(home: Path, cache: Path):
    return run_skiff("ask", "--max-tokens", "8", "--json", QUESTION, env=environment(home, cache))


# -- the notes index ---------------------------------------------------------------------------


INDEX_DAMAGE = {
    "chroma database truncated": lambda index: truncate(index / "chroma" / "chroma.sqlite3"),
    "chroma database overwritten": lambda index: garbage(index / "chroma" / "chroma.sqlite3"),
    "chroma folder deleted": lambda index: shutil.rmtree(index / "chroma"),
    "chroma database deleted": lambda index: (index / "chroma" / "chroma.sqlite3").unlink(),
    "manifest overwritten": lambda index: garbage(index / "manifest.sqlite3"),
    "manifest truncated": lambda index: truncate(index / "manifest.sqlite3"),
}


@pytest.mark.parametrize("damage", list(INDEX_DAMAGE))
def test_a_damaged_index_is_said_kept_and_rebuilt_by_skiff_index(healthy, damaged, damage):
    index = damaged / "data" / "index"
    INDEX_DAMAGE[damage](index)

    asked = ask(damaged, healthy["cache"])
    assert "the notes index was damaged" in asked.stderr, asked.stderr
    assert json.loads(asked.stdout)["answer"] is not None  # skiff starts and answers normally
    if "deleted" not in damage:
        assert backups(index), "the damaged copy is kept"
    assert "skiff index` rebuilds it from " + str(healthy["notes"]) in asked.stderr

    # No paths: the folders indexed before, known even when the manifest itself was lost.
    run_skiff("index", env=environment(damaged, healthy["cache"]))
    assert index_state(damaged, healthy["cache"]) == healthy["index"]
    assert notes_digest(healthy["notes"]) == healthy["digest"]
    again = ask(damaged, healthy["cache"])
    assert "damaged" not in again.stderr and json.loads(again.stdout)["sources"]


@pytest.mark.parametrize("damage", ["segment folder deleted", "segment files overwritten"])
def test_chromadb_rebuilds_its_vector_files_from_its_own_log(healthy, damaged, damage):
    """The HNSW files are a cache chromadb rebuilds from its SQLite log: nothing is lost, so
    nothing needs saying."""
    [segment] = [p for p in (damaged / "data" / "index" / "chroma").iterdir() if p.is_dir()]
    if damage == "segment folder deleted":
        shutil.rmtree(segment)
    else:
        for part in segment.iterdir():
            garbage(part, part.stat().st_size or 64)
    asked = ask(damaged, healthy["cache"])
    assert "damaged" not in asked.stderr
    assert json.loads(asked.stdout)["sources"], "retrieval still works"
    assert index_state(damaged, healthy["cache"]) == healthy["index"]


# -- answer records, router posterior, chat history --------------------------------------------


def posterior(home: Path):
    with np.load(home / "data" / "router" / "surrogate.npz") as data:
        return data["mean"].copy(), data["covariance"].copy(), json.loads(str(data["meta"]))


@pytest.mark.parametrize("damage", [garbage, truncate], ids=["overwritten", "truncated"])
def test_a_damaged_posterior_is_rebuilt_from_the_records(healthy, damaged, damage):
    mean, covariance, meta = posterior(healthy["home"])
    assert meta["last_feedback_event"] >= 2
    damage(damaged / "data" / "router" / "surrogate.npz")
    asked = ask(damaged, healthy["cache"])
    assert "the router posterior was damaged" in asked.stderr
    assert backups(damaged / "data" / "router") == [n for n in backups(damaged / "data" / "router")
                                                    if n.startswith("surrogate.npz.damaged-")] != []
    rebuilt_mean, rebuilt_covariance, rebuilt_meta = posterior(damaged)
    np.testing.assert_allclose(rebuilt_mean, mean, atol=1e-9)
    np.testing.assert_allclose(rebuilt_covariance, covariance, atol=1e-9)
    assert rebuilt_meta["last_feedback_event"] == meta["last_feedback_event"]


def test_a_rebuilt_posterior_does_not_learn_again_what_a_reset_forgot(healthy, damaged):
    env = environment(damaged, healthy["cache"])
    run_skiff("router", "reset", "--yes", env=env)
    prior_mean, _, _ = posterior(damaged)
    garbage(damaged / "data" / "router" / "surrogate.npz")
    assert "the router posterior was damaged" in ask(damaged, healthy["cache"]).stderr
    np.testing.assert_allclose(posterior(damaged)[0], prior_mean, atol=1e-12)


@pytest.mark.parametrize("damage", [garbage, truncate], ids=["overwritten", "truncated"])
def test_damaged_answer_records_start_afresh_and_the_router_keeps_learning(healthy, damaged, damage):
    env = environment(damaged, healthy["cache"])
    _, _, before = posterior(healthy["home"])
    database = damaged / "data" / "skiff.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    damage(database)
    asked = ask(damaged, healthy["cache"])
    assert "the answers database was damaged" in asked.stderr
    assert any(n.startswith("skiff.sqlite3.damaged-") for n in backups(damaged / "data"))
    run_skiff("feedback", "good", env=env)
    _, _, after = posterior(damaged)
    # The new verdict is learned (its event numbered after the ones the posterior holds).
    assert after["last_feedback_event"] == before["last_feedback_event"] + 1
    assert run_skiff("status", "--json", env=env).returncode == 0


def test_damaged_chat_history_starts_afresh_with_a_backup(tmp_path):
    from skiff.app.history import ChatHistory
    from skiff.assistant import recoveries

    path = tmp_path / "chats.sqlite3"
    history = ChatHistory(path)
    chat = history.create()
    history.add_question(chat.id, "kept in the backup")
    history.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    truncate(path)
    garbage_free = len(recoveries())
    history = ChatHistory(path)
    assert history.recovery is not None and history.conversations() == []
    assert recoveries()[garbage_free:] == [history.recovery]
    [backup] = [b for b in history.recovery.backups if b.name.startswith("chats.sqlite3.damaged-")]
    assert backup.stat().st_size > 0
    history.add_question(history.create().id, "a fresh start works")
    history.close()


def test_a_database_that_cannot_be_opened_is_an_error_not_damage(tmp_path):
    """Only damage moves a file aside: a path skiff cannot open (here a folder where the file
    should be) is an error, and nothing is moved."""
    import sqlite3

    from skiff.app.history import ChatHistory

    path = tmp_path / "chats.sqlite3"
    path.mkdir()
    (path / "keep.txt").write_text("not skiff's to move")
    with pytest.raises(sqlite3.OperationalError):
        ChatHistory(path)
    assert backups(tmp_path) == [] and (path / "keep.txt").exists()
