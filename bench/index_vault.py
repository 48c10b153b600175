"""Indexing the whole Obsidian Help vault: skiff end to end vs the raw embedder on the same chunks.

    .venv/bin/python bench/index_vault.py [--sample 6000]

Prints and saves (bench/out/index_vault.json): files, chunks, end-to-end chunks/s, peak memory,
the raw encode throughput of the same embedder (ONNX) and of sentence-transformers (torch) on a
seeded sample of the very chunks skiff indexed, the unchanged re-index time, and retrieval latency.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import VAULT, percentile, save  # noqa: E402

SKIFF = Path(sys.executable).parent / "skiff"


def run_index(env: dict, vault: Path) -> tuple[dict, float, float]:
    started = time.perf_counter()
    process = subprocess.Popen([str(SKIFF), "index", str(vault), "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout_chunks = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(process.stderr.read())
    return json.loads(stdout_chunks), time.perf_counter() - started, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, default=6000, help="chunks for the raw-encoder baselines")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--subset", default="", help="a folder inside the vault, e.g. en (default: all of it)")
    args = parser.parse_args()
    vault = VAULT / args.subset if args.subset else VAULT

    home = Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    env = {**os.environ, "SKIFF_HOME": str(home)}
    # Export the embedder first so the timed run measures indexing, not the one-time export.
    subprocess.run([str(SKIFF), "index", str(home / "empty")], env=env, capture_output=True)
    os.environ["SKIFF_HOME"] = str(home)

    summary, wall, peak_mb = run_index(env, vault)
    again, rewall, _ = run_index(env, vault)

    from skiff.local.chunking import chunk_document
    from skiff.local.embedder import Embedder
    from skiff.local.readers import read_document
    from skiff.router import Assistant, load_settings

    assistant = Assistant(load_settings())
    collection = assistant.notes.collection
    stored = collection.get(include=["metadatas"])
    rng = random.Random(7)
    chosen_paths = sorted({m["path"] for m in stored["metadatas"]})
    rng.shuffle(chosen_paths)
    texts: list[str] = []
    for path in chosen_paths:
        document = read_document(Path(path), Path(path).read_bytes())
        title = document.title or Path(path).stem
        texts += [c.embed_text for c in chunk_document(document, title, assistant.embedder, assistant.settings.chunk_tokens)]
        if len(texts) >= args.sample:
            break
    texts = texts[: args.sample]

    onnx = Embedder(home / "cache", backend="onnx")
    onnx.encode(texts[:8])
    t0 = time.perf_counter()
    onnx.encode(texts)
    onnx_rate = len(texts) / (time.perf_counter() - t0)
    torch_embedder = Embedder(home / "cache", backend="torch", batch_size=32)
    torch_embedder.encode(texts[:8])
    t0 = time.perf_counter()
    torch_embedder.encode(texts)
    torch_rate = len(texts) / (time.perf_counter() - t0)

    # Retrieval latency: embed + nearest-neighbour query, on headings of the vault as questions.
    headings = [m.get("section") or m.get("title") for m in stored["metadatas"]]
    queries = [q for q in rng.sample(headings, min(len(headings), args.queries * 2)) if q][: args.queries]
    assistant.retrieve("warm up")
    latencies = []
    for query in queries:
        t0 = time.perf_counter()
        assistant.retrieve(query, k=5)
        latencies.append((time.perf_counter() - t0) * 1000)
    assistant.close()

    e2e_rate = summary["chunks_added"] / summary["seconds"]
    save(f"index_vault{'_' + args.subset if args.subset else ''}", {
        "vault": str(vault),
        "files": summary["files_seen"],
        "indexed": summary["indexed"],
        "skipped": len(summary["skipped"]),
        "chunks": summary["chunks_added"],
        "index_seconds": round(summary["seconds"], 1),
        "process_wall_seconds": round(wall, 1),
        "end_to_end_chunks_per_s": round(e2e_rate, 1),
        "peak_rss_mb": round(peak_mb),
        "baseline_sample_chunks": len(texts),
        "raw_onnx_encode_chunks_per_s": round(onnx_rate, 1),
        "raw_torch_encode_chunks_per_s": round(torch_rate, 1),
        "ratio_end_to_end_vs_raw_onnx": round(e2e_rate / onnx_rate, 3),
        "ratio_end_to_end_vs_raw_torch": round(e2e_rate / torch_rate, 3),
        "reindex_unchanged_seconds": round(again["seconds"], 2),
        "reindex_unchanged_seconds_per_10k_files": round(again["seconds"] / again["files_seen"] * 10000, 2),
        "reindex_unchanged_counts": {k: again[k] for k in ("indexed", "unchanged", "removed")},
        "retrieval_queries": len(latencies),
        "retrieval_ms_p50": round(percentile(latencies, 50), 2),
        "retrieval_ms_p95": round(percentile(latencies, 95), 2),
    })


if __name__ == "__main__":
    main()
