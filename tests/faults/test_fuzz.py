"""Coverage-guided fuzzing of the readers (fuzz/readers_fuzz.py, atheris) for a bounded time: any
exception but UnreadableDocument, a broken invariant, a hang or a memory blow-up is a crash, and a
crash fails the test with its input saved. For longer runs, see the harness's docstring."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

HARNESS = REPO / "fuzz" / "readers_fuzz.py"
SEEDS = REPO / "fuzz" / "corpus" / "readers"
SECONDS = 25

pytest.importorskip("atheris")


def fuzz(work: Path, seconds: int = SECONDS) -> subprocess.CompletedProcess:
    corpus = work / "corpus"  # new inputs land here, never among the committed seeds
    corpus.mkdir(exist_ok=True)
    # libFuzzer reads its peak memory from getrusage, and Linux carries ru_maxrss over fork and
    # exec: the harness starts out "at" this pytest process's peak (2 GB late in a full run, with
    # models loaded), so its limit is set that far above. A single allocation is held to 2 GB.
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    command = [
        sys.executable,
        str(HARNESS),
        str(corpus),
        str(SEEDS),
        f"-max_total_time={seconds}",
        "-timeout=20",
        f"-rss_limit_mb={inherited_mb + 2048}",
        "-malloc_limit_mb=2048",
        "-max_len=16384",
        "-seed=20261122",
        f"-artifact_prefix={work}/",
        "-print_final_stats=1",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, cwd=work, check=False)


def test_seed_corpus_is_small_and_covers_every_kind():
    seeds = sorted(SEEDS.iterdir())
    assert {p.suffix for p in seeds} >= {".md", ".txt", ".rst", ".org", ".pdf"}
    assert all(p.stat().st_size <= 4096 for p in seeds)


def test_fuzzing_the_readers_finds_no_crash(tmp_path):
    result = fuzz(tmp_path)
    output = result.stdout + result.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-")))
    assert result.returncode == 0 and not crashes, f"{crashes}\n{output[-6000:]}"
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    # A run that never got past the seeds proves little. An idle two-core machine does ~400
    # inputs a second; the floor is low because a saturated one can do a hundred times fewer.
    assert runs and int(runs.group(1)) >= 50, output[-3000:]


def test_the_harness_reports_a_broken_invariant(tmp_path):
    # The harness must be able to fail: a reader result that breaks an invariant is a crash.
    sys.path.insert(0, str(HARNESS.parent))
    try:
        from readers_fuzz import check_document
        from skiff.local.readers import Block, Document

        broken = Document("text", [Block("two", (), 1, 3)])  # claims lines past the end
        with pytest.raises(AssertionError):
            check_document(".txt", b"one\ntwo\n", broken)
    finally:
        sys.path.remove(str(HARNESS.parent))
