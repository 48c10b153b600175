"""The layout: app -> assistant -> router -> {local, cloud, config}, Textual only in app/, one `skiff` namespace."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

LAYERS = ("app", "assistant", "router", "local", "cloud", "config")


@pytest.fixture(scope="module")
def installed_tree(tmp_path_factory) -> Path:
    """A plain (non-editable) install of skiff: import-linter reads packages from their folders."""
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.skip("import-linter is not installed")
    root = tmp_path_factory.mktemp("lint")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
         str(root / "site"), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _source_files() -> set[str]:
    """Every module and data file under the four folders, as its installed path."""
    files = set()
    for layer in LAYERS:
        for path in (REPO / layer).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".npz", ".md", ".txt"):
                files.add(f"skiff/{layer}/{path.relative_to(REPO / layer).as_posix()}")
    return files


def test_a_plain_install_carries_every_module_and_data_file(installed_tree):
    """An editable install finds subpackages on its own; a wheel only has what pyproject lists."""
    site = installed_tree / "site"
    installed = {p.relative_to(site).as_posix() for p in (site / "skiff").rglob("*") if p.is_file()}
    missing = _source_files() - installed
    assert not missing, f"not installed by `pip install .`: {sorted(missing)}"


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tree / "site")}
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=tree, env=env,
                          capture_output=True, text=True)


def test_import_contracts_hold(installed_tree):
    result = _lint(installed_tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("folder, line", [("local", "import skiff.assistant.pipeline"),  # upward
                                          ("router", "import skiff.assistant.pipeline"),  # upward
                                          ("config", "import skiff.local.models"),  # config imports no skiff
                                          ("assistant", "import skiff.router.research.evaluation"),  # research
                                          ("app", "import httpx"),  # the app around the assistant
                                          ("app", "from llama_cpp import Llama"),
                                          ("assistant", "import starlette")])  # serving is a face
def test_import_contracts_catch_a_forbidden_import(installed_tree, folder, line):
    probe = installed_tree / "site" / "skiff" / folder / "_forbidden_probe.py"
    probe.write_text(line + "\n")
    try:
        result = _lint(installed_tree)
    finally:
        probe.unlink()
    assert result.returncode != 0 and "BROKEN" in result.stdout


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", ["assistant", "router", "local", "cloud", "config"])
def test_textual_stays_in_the_app(folder):
    for path in (REPO / folder).rglob("*.py"):
        assert not any(n == "textual" or n.startswith("textual.") for n in _imports(path)), path


def test_local_cloud_and_config_never_import_upward_or_each_other():
    above = ("skiff.app", "skiff.assistant", "skiff.router")
    rules = {"local": (*above, "skiff.cloud", "skiff.config"), "cloud": (*above, "skiff.local", "skiff.config"),
             "config": (*above, "skiff.local", "skiff.cloud")}
    for folder, forbidden in rules.items():
        for path in (REPO / folder).rglob("*.py"):
            bad = [n for n in _imports(path) if n.startswith(forbidden)]
            assert not bad, (path, bad)


def test_no_bare_top_level_modules_are_installed(tmp_path):
    # From a neutral folder, so the repository's own folders are not on sys.path.
    probe = "import importlib.util, sys; print([n for n in sys.argv[1:] if importlib.util.find_spec(n)])"
    result = subprocess.run([sys.executable, "-c", probe, *LAYERS], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import skiff.app, skiff.assistant, skiff.router, skiff.local, skiff.cloud, skiff.config; "
            "from skiff.assistant import Assistant",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_library_import_stays_light(tmp_path):
    """`from skiff.assistant import Assistant` must not drag in torch, chromadb, llama_cpp or textual."""
    probe = (
        "import sys; from skiff.assistant import Assistant; "
        "print(sorted(m for m in ('torch', 'chromadb', 'llama_cpp', 'textual', 'sentence_transformers') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
