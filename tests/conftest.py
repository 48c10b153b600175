from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VAULT = SHARED / "data" / "notes" / "obsidian-help" / "en"
SKIFF = Path(sys.executable).parent / "skiff"

# A fixed, small slice of the real Obsidian Help vault keeps tests quick.
VAULT_SUBSET = [
    "Getting started/Link notes.md",
    "Linking notes and files/Internal links.md",
    "Linking notes and files/Embed files.md",
    "Editing and formatting/Basic formatting syntax.md",
    "Editing and formatting/Callouts.md",
    "Editing and formatting/Properties.md",
    "Files and folders/Manage notes.md",
    "Plugins/Daily notes.md",
    "Plugins/Templates.md",
    "Plugins/Search.md",
    "Plugins/Canvas.md",
    "Help and support.md",
]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One embedder export (ONNX) for the whole session."""
    return tmp_path_factory.mktemp("skiff-cache")


@pytest.fixture
def skiff_home(tmp_path, monkeypatch, shared_cache) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SKIFF_HOME", str(home))
    monkeypatch.setenv("SKIFF_CACHE_DIR", str(shared_cache))
    for name in list(os.environ):
        if name.startswith("SKIFF_") and name not in ("SKIFF_HOME", "SKIFF_CACHE_DIR"):
            monkeypatch.delenv(name)
    # Mechanics run on the fast 135M model; tests/test_default_model.py runs the default one.
    monkeypatch.setenv("SKIFF_MODEL_PATH", str(fast_model_path()))
    return home


def fast_model_path() -> Path:
    """The bundled SmolLM2-135M: fast, so the tests of mechanics run on it."""
    from skiff.local.assets import bundled_gguf_path

    return bundled_gguf_path()


@pytest.fixture
def vault(tmp_path) -> Path:
    """A writable copy of a slice of the real vault."""
    if not VAULT.is_dir():
        pytest.skip("../shared/data/notes is not beside the repository")
    target = tmp_path / "vault"
    for relative in VAULT_SUBSET:
        source = VAULT / relative
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    return target


@pytest.fixture
def assistant(skiff_home):
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    instance = Assistant(load_settings())
    yield instance
    instance.close()


def run_skiff(*args: str, env: dict | None = None, check: bool = True, timeout: int = 300, **kwargs):
    """The real `skiff` executable of this environment, in a subprocess."""
    result = subprocess.run(
        [str(SKIFF), *args], capture_output=True, text=True, env=env or os.environ.copy(), timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"skiff {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def deterministic(examples: int):
    """Hypothesis settings for property tests: the same examples on every run and machine,
    nothing written to .hypothesis/."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
