"""Indexing ten times the Obsidian Help vault, and the memory it takes as the index grows.

    .venv/bin/python bench/index_scale.py [--copies 10] [--work DIR]

The notes are synthesised from the vault: copy 0 is the vault itself, each further copy is every
file again with one word in six (of four letters or more) swapped for another word of the same
file, seeded by copy and path. The languages, the Markdown and the chunk sizes stay the vault's,
but no chunk repeats, so every one is embedded for real.

`skiff index` runs as a subprocess while this script samples its resident memory (VmRSS) and the
manifest's file and chunk counts every few seconds. The run takes hours on a laptop-class CPU, so it
resumes: indexing is incremental and crash-safe, every sample is appended to WORK/samples.jsonl,
and running the script again carries on (kill it at any point). Once a run indexes the last file
it reports (bench/out/index_scale.json):

- chunks/s over each tenth of the chunks (does the growing index slow indexing?);
- resident memory against chunks: peak, at each tenth, and the least-squares slope in bytes per
  chunk;
- baseline, measured on the same index: a process that only opens the finished index and answers
  one query. chromadb keeps its HNSW graph in memory, so that process's memory grows with the
  index too; indexing's peak minus it is what indexing itself holds;
- the re-index of the unchanged folder, retrieval latency on the full index, and its size on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import VAULT, percentile, save  # noqa: E402

SKIFF = Path(sys.executable).parent / "skiff"
WORD = re.compile(r"\w{4,}")
SAMPLE_EVERY_S = 5.0


def synthesise(work: Path, copies: int, vault: Path) -> Path:
    notes = work / "notes"
    sources = sorted(path for path in vault.rglob("*") if path.is_file())
    for copy in range(copies):
        done = notes / f".copy-{copy}-complete"
        if done.exists():
            continue
        target = notes / f"copy-{copy}"
        shutil.rmtree(target, ignore_errors=True)
        for source in sources:
            relative = source.relative_to(vault)
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            text = source.read_text(encoding="utf-8", errors="replace")
            if copy:
                rng = random.Random(f"{copy}/{relative}")
                words = WORD.findall(text) or ["note"]
                text = WORD.sub(lambda found: rng.choice(words) if rng.random() < 1 / 6 else found.group(),  # noqa: B023
                                text)  # the lambda runs at once, inside the loop
            destination.write_text(text, encoding="utf-8")
        done.touch()
        print(f"synthesised copy {copy + 1}/{copies}", file=sys.stderr, flush=True)
    return notes


def manifest_totals(home: Path) -> tuple[int, int]:
    path = home / "data" / "index" / "manifest.sqlite3"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*), COALESCE(SUM(chunks), 0) FROM files WHERE state='done'").fetchone()
    except sqlite3.Error:
        return 0, 0


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def index_with_samples(work: Path, notes: Path, env: dict) -> dict:
    """One `skiff index` run, sampled; its summary, or raises if it failed."""
    run = f"{time.time():.0f}-{os.getpid()}"
    started = time.time()
    # Files, not pipes: nobody reads a pipe until the run ends, and a full one would stall it.
    stdout_path, stderr_path = work / f"index-{run}.out", work / f"index-{run}.err"
    with stdout_path.open("w") as stdout_file, stderr_path.open("w") as stderr_file:
        process = subprocess.Popen([str(SKIFF), "index", str(notes), "--json"], env=env,
                                   stdout=stdout_file, stderr=stderr_file, text=True)
    with (work / "samples.jsonl").open("a") as samples:
        while process.poll() is None:
            memory = rss_mb(process.pid)
            files, chunks = manifest_totals(work / "home")
            if memory is not None:
                samples.write(json.dumps({"run": run, "t": round(time.time() - started, 1), "rss_mb": round(memory, 1),
                                          "files": files, "chunks": chunks}) + "\n")
                samples.flush()
            time.sleep(SAMPLE_EVERY_S)
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"skiff index exited {process.returncode}: {stderr_path.read_text()[-2000:]}")
    summary = json.loads(stdout_path.read_text())
    summary["wall_s"] = time.time() - started
    summary["skipped"], summary["warnings"] = len(summary["skipped"]), len(summary.get("warnings", []))
    with (work / "runs.jsonl").open("a") as runs:
        runs.write(json.dumps({"run": run, **summary}) + "\n")
    return summary


def throughput_by_tenth(samples: list[dict], total_chunks: int) -> list[float | None]:
    """chunks/s over each tenth of the chunks, from every interval between two samples of the same
    run (a run's own clock; the gap between runs is not counted), stalls included: an interval
    counts toward the tenth it starts in. None for a tenth no interval starts in."""
    points = [(s["chunks"], s["t"], s["run"]) for s in samples]
    rates: list[float | None] = []
    for tenth in range(10):
        low, high = total_chunks * tenth / 10, total_chunks * (tenth + 1) / 10
        chunks = seconds = 0.0
        for (c0, t0, r0), (c1, t1, r1) in zip(points, points[1:]):
            if r0 == r1 and low <= c0 < high:
                chunks += c1 - c0
                seconds += t1 - t0
        rates.append(round(chunks / seconds, 1) if seconds else None)
    return rates


def serving_memory_mb(env: dict, queries: list[str]) -> tuple[float, list[float]]:
    """The baseline: a fresh process that opens the finished index and answers queries, its peak
    memory and its retrieval latencies (ms)."""
    code = ("import json, resource, sys, time\n"
            "from skiff.assistant import Assistant, load_settings\n"
            "assistant = Assistant(load_settings())\n"
            "latencies = []\n"
            "for query in json.loads(sys.argv[1]):\n"
            "    t0 = time.perf_counter(); assistant.retrieve(query, k=5)\n"
            "    latencies.append((time.perf_counter() - t0) * 1000)\n"
            "print(json.dumps({'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,"
            " 'latencies': latencies[1:]}))\n")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(queries)], env=env, capture_output=True,
                            text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures["peak_mb"], figures["latencies"]


def fit_slope(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least squares y = slope·x + intercept; None without two distinct x."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return slope, mean_y - slope * mean_x


def memory_by_run(samples: list[dict]) -> list[dict]:
    """Each run's chunks and memory. A resumed run starts small and grows as it touches the
    index, so a slope is only meaningful within one run."""
    runs: dict[str, list[dict]] = {}
    for sample in samples:
        if sample["chunks"] > 0:
            runs.setdefault(sample["run"], []).append(sample)
    summary = []
    for run, points in runs.items():
        fit = fit_slope([p["chunks"] for p in points], [p["rss_mb"] for p in points])
        summary.append({"run": run, "chunks_from": points[0]["chunks"], "chunks_to": points[-1]["chunks"],
                        "rss_mb_first": points[0]["rss_mb"], "rss_mb_peak": max(p["rss_mb"] for p in points),
                        "slope_bytes_per_chunk": round(fit[0] * 2**20) if fit else None})
    return summary


def report(work: Path, notes: Path, env: dict, copies: int, vault: Path, final: dict) -> None:
    samples = [json.loads(line) for line in (work / "samples.jsonl").read_text().splitlines() if line.strip()]
    runs = [json.loads(line) for line in (work / "runs.jsonl").read_text().splitlines() if line.strip()]
    unchanged_runs = {run["run"] for run in runs if not run["indexed"] and not run["chunks_added"]}
    samples = [sample for sample in samples if sample["run"] not in unchanged_runs]  # an earlier report's
    files, chunks = manifest_totals(work / "home")
    by_run: dict[str, float] = {}
    for sample in samples:
        by_run[sample["run"]] = max(by_run.get(sample["run"], 0.0), sample["t"])
    active_s = sum(by_run.values())
    growing = [s for s in samples if s["chunks"] > 0]
    by_run_memory = memory_by_run(samples)
    longest = max(by_run_memory, key=lambda run: run["chunks_to"] - run["chunks_from"])
    at_tenths = []
    for tenth in range(1, 11):
        upto = [s["rss_mb"] for s in growing if s["chunks"] <= chunks * tenth / 10]
        at_tenths.append(round(max(upto), 0) if upto else None)
    one_vault = [s["rss_mb"] for s in growing if s["chunks"] <= chunks / copies]

    again = index_with_samples(work, notes, env)  # everything unchanged now
    rng = random.Random(7)
    queries = ["warm up"] + [path.stem for path in rng.sample(sorted(vault.rglob("*.md")), 100)]
    serving_mb, latencies = serving_memory_mb(env, queries)
    peak_mb = max(s["rss_mb"] for s in samples)
    index_bytes = sum(path.stat().st_size for path in (work / "home" / "data" / "index").rglob("*") if path.is_file())
    notes_bytes = sum(path.stat().st_size for path in notes.rglob("*.md"))
    save("index_scale" + (f"_{vault.name}" if vault != VAULT else ""), {
        "copies": copies,
        "files": files,
        "chunks": chunks,
        "skipped": final["skipped"],
        "notes_mb": round(notes_bytes / 2**20),
        "index_on_disk_mb": round(index_bytes / 2**20),
        "runs": len(by_run),
        "samples": len(samples),
        "indexing_active_s": round(active_s),
        "chunks_per_s_overall": round(chunks / active_s, 1),
        "chunks_per_s_by_tenth": throughput_by_tenth(samples, chunks),
        "peak_rss_mb": round(peak_mb),
        "peak_rss_mb_up_to_each_tenth": at_tenths,
        "peak_rss_mb_over_the_first_vault_copy": round(max(one_vault)) if one_vault else None,
        "rss_slope_bytes_per_chunk_in_the_longest_run": longest["slope_bytes_per_chunk"],
        "memory_by_run": by_run_memory,
        "baseline_serving_only_peak_mb": round(serving_mb),
        "indexing_peak_minus_serving_mb": round(peak_mb - serving_mb),
        "reindex_unchanged_s": round(again["seconds"], 2),
        "reindex_unchanged_counts": {k: again[k] for k in ("indexed", "unchanged", "removed")},
        "retrieval_ms_p50": round(percentile(latencies, 50), 1),
        "retrieval_ms_p95": round(percentile(latencies, 95), 1),
        "runs_detail": [{k: run[k] for k in ("run", "indexed", "unchanged", "chunks_added", "seconds", "wall_s")}
                        for run in runs],
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "skiff-index-scale")
    parser.add_argument("--subset", default="", help="a folder of the vault, e.g. en, for a quick trial")
    args = parser.parse_args()
    vault = VAULT / args.subset if args.subset else VAULT
    args.work.mkdir(parents=True, exist_ok=True)
    notes = synthesise(args.work, args.copies, vault)
    env = {**os.environ, "SKIFF_HOME": str(args.work / "home")}
    summary = index_with_samples(args.work, notes, env)  # a killed run leaves its samples; rerun to resume
    print(json.dumps({k: summary[k] for k in ("files_seen", "indexed", "unchanged", "chunks_total", "seconds")}),
          file=sys.stderr, flush=True)
    report(args.work, notes, env, args.copies, vault, summary)


if __name__ == "__main__":
    main()
