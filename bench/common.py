"""Helpers for the benchmarks: where the data is, and how figures are printed and saved."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SKIFF_SHARED", REPO.parent / "shared"))
VAULT = SHARED / "data" / "notes" / "obsidian-help"
OUT = REPO / "bench" / "out"  # git-ignored: scratch a new machine starts without
# Tracked in git: rows that cost hours of the 2-core machine, so they outlive it.
ROWS = REPO / "bench" / "rows"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def save(name: str, figures: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), **figures}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
