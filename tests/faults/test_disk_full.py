"""Disk full during indexing: a clear error, nothing half-written, and once there is room again
`skiff index` finishes the job into exactly the index a clean run makes.

The data folder is a small tmpfs mounted in a private mount namespace (`unshare`), so the test
needs no privileges where user namespaces are allowed, and touches no real disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import SKIFF, VAULT, run_skiff
from index_state import _STATE_SCRIPT, index_state

# Runs inside the namespace: mount, index into too little space, grow it, index again, read it.
_INNER = r"""
import json, os, subprocess, sys
home, notes, cache, size, skiff, state_script = sys.argv[1:7]
os.makedirs(home, exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", home], check=True)
env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
env.update(SKIFF_HOME=home, SKIFF_CACHE_DIR=cache, SKIFF_OFFLINE="true", SKIFF_INDEX_BATCH_CHUNKS="32")
full = subprocess.run([skiff, "index", notes], env=env, capture_output=True, text=True)
status = subprocess.run([skiff, "status", "--json"], env=env, capture_output=True, text=True)
subprocess.run(["mount", "-o", "remount,size=512m", home], check=True)
again = subprocess.run([skiff, "index"], env=env, capture_output=True, text=True)
state = subprocess.run([sys.executable, "-c", state_script, home, cache], capture_output=True, text=True)
print(json.dumps({"full_rc": full.returncode, "full_stderr": full.stderr, "status_rc": status.returncode,
                  "again_rc": again.returncode, "again_stderr": again.stderr,
                  "state": json.loads(state.stdout) if state.returncode == 0 else state.stderr}))
"""


def namespace_command() -> list[str]:
    for command in (["unshare", "-rm"], ["unshare", "-m"]):
        probe = subprocess.run([*command, "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True)
        if probe.returncode == 0:
            return command
    pytest.skip("cannot mount a tmpfs in a private mount namespace here (no user namespaces, not root)")


def test_disk_full_while_indexing_is_a_clear_error_and_loses_nothing(tmp_path, shared_cache):
    if not VAULT.is_dir():
        pytest.skip("../shared/data/notes is not beside the repository")
    unshare = namespace_command()
    notes = tmp_path / "notes"
    for folder in ("Plugins", "Editing and formatting"):
        shutil.copytree(VAULT / folder, notes / folder)
    clean = tmp_path / "clean"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    run_skiff("index", str(notes), env={**env, "SKIFF_HOME": str(clean), "SKIFF_CACHE_DIR": str(shared_cache),
                                       "SKIFF_OFFLINE": "true", "SKIFF_INDEX_BATCH_CHUNKS": "32"})
    expected = index_state(clean, shared_cache)

    before = {p: p.read_bytes() for p in notes.rglob("*") if p.is_file()}
    result = subprocess.run([*unshare, sys.executable, "-c", _INNER, str(tmp_path / "small"), str(notes),
                             str(shared_cache), "3m", str(SKIFF), _STATE_SCRIPT],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout)
    # The full disk: a one-line error that says so, not a traceback.
    assert got["full_rc"] == 2, got["full_stderr"][-3000:]
    assert "Traceback" not in got["full_stderr"]
    assert "no space left" in got["full_stderr"].lower(), got["full_stderr"]
    assert "skiff index" in got["full_stderr"]  # and what to do about it
    assert got["status_rc"] == 0  # skiff still starts
    # With room again, the same command finishes, into exactly the clean run's index.
    assert got["again_rc"] == 0, got["again_stderr"][-3000:]
    assert got["state"] == expected
    assert {p: p.read_bytes() for p in notes.rglob("*") if p.is_file()} == before
