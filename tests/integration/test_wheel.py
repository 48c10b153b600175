"""The wheel a user installs: built, installed into a fresh venv, and run on real notes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

# The folders that become subpackages of `skiff`; none may be installed as a top-level package.
LAYERS = ("app", "assistant", "router", "local", "cloud", "config")


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_runs(tmp_path):
    """What packaging/README.md tells a user to do: build the wheel, install it, run it."""
    wheels = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("skiff-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert not tops & set(LAYERS), tops
    assert "skiff" in tops
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, capture_output=True, timeout=900)
    result = subprocess.run([*pip, str(wheel)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    version = subprocess.run([str(venv / "bin" / "skiff"), "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("skiff 0."), version.stderr
    # First real use from the wheel alone: every reader, the embedder export and chromadb.
    env = {"PATH": os.environ["PATH"], "SKIFF_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    indexed = subprocess.run([str(venv / "bin" / "skiff"), "index", str(REPO / "examples" / "notes"), "--json"],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert indexed.returncode == 0, indexed.stderr[-3000:]
    assert json.loads(indexed.stdout)["indexed"] == len(list((REPO / "examples" / "notes").iterdir()))
    shutil.rmtree(venv, ignore_errors=True)
