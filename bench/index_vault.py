"""Indexing the whole Obsidian Help vault: skiff end to end vs the raw embedder on the same chunks.

    .venv/bin/python bench/index_vault.py [--subset en] [--sample 6000] [--torch-sample 2000]

Prints and saves (bench/out/index_vault[_SUBSET].json): files, chunks, end-to-end chunks/s of a
fresh `skiff index`, its peak memory, the raw encode throughput of the same embedder (ONNX, before
and after the run) and of sentence-transformers (torch) on a seeded sample of the very chunks skiff
indexes, the unchanged re-index time, and retrieval latency on the resulting index.
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
    parser.add_argument("--torch-sample", type=int, default=2000, help="chunks for the torch baseline")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--subset", default="", help="a folder inside the vault, e.g. en (default: all of it)")
    args = parser.parse_args()
    vault = VAULT / args.subset if args.subset else VAULT

    home = Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    env = {**os.environ, "SKIFF_HOME": str(home)}
    os.environ["SKIFF_HOME"] = str(home)

    from skiff.local.chunking import chunk_document
    from skiff.local.embedder import Embedder
    from skiff.local.files import Found, walk_notes
    from skiff.local.readers import read_document
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    # The baselines encode a seeded sample of the very chunks skiff will index (same reader, same
    # chunker), drawn from files across the whole folder. This machine shares its cores with
    # neighbours, so the ONNX baseline runs once before and once after the end-to-end run and
    # the ratio uses their median.
    settings = load_settings()
    onnx = Embedder(settings.cache_dir, backend="onnx")
    files = sorted(item.path for item in walk_notes(str(vault)) if isinstance(item, Found))
    rng = random.Random(7)
    rng.shuffle(files)
    texts: list[str] = []
    for path in files:
        try:
            document = read_document(Path(path), Path(path).read_bytes())
        except Exception:  # noqa: BLE001 - skiff skips such files too; the sample just moves on
            continue
        title = document.title or Path(path).stem
        texts += [c.embed_text for c in chunk_document(document, title, onnx, settings.chunk_tokens)]
        if len(texts) >= args.sample:
            break
    texts = texts[: args.sample]

    def onnx_rate() -> float:
        started = time.perf_counter()
        onnx.encode(texts)
        return len(texts) / (time.perf_counter() - started)

    # The first encode exports the embedder to ONNX under this home's cache: a one-time cost the
    # timed run must not pay.
    onnx.encode(texts[:8])
    onnx_before = onnx_rate()
    summary, wall, peak_mb = run_index(env, vault)
    onnx_after = onnx_rate()
    again, rewall, _ = run_index(env, vault)

    torch_texts = texts[: args.torch_sample]
    torch_embedder = Embedder(settings.cache_dir, backend="torch", batch_size=32)
    torch_embedder.encode(torch_texts[:8])
    t0 = time.perf_counter()
    torch_embedder.encode(torch_texts)
    torch_rate = len(torch_texts) / (time.perf_counter() - t0)

    # The timed figures first, so a failure further on cannot lose them.
    print(json.dumps({"index": summary | {"skipped": len(summary["skipped"]), "warnings": len(summary["warnings"])},
                      "onnx_before": onnx_before, "onnx_after": onnx_after, "torch": torch_rate,
                      "reindex_seconds": again["seconds"]}), file=sys.stderr, flush=True)

    assistant = Assistant(settings)
    # Retrieval latency: embed + nearest-neighbour query, on headings of the vault as questions.
    # chromadb refuses one get() of ~100k rows (too many SQL variables), so page through.
    headings: list[str] = []
    collection = assistant.notes.collection
    for offset in range(0, collection.count(), 5000):
        page = collection.get(include=["metadatas"], limit=5000, offset=offset)
        headings += [m.get("section") or m.get("title") for m in page["metadatas"]]
    queries = [q for q in rng.sample(headings, min(len(headings), args.queries * 2)) if q][: args.queries]
    assistant.retrieve("warm up")
    latencies = []
    for query in queries:
        t0 = time.perf_counter()
        assistant.retrieve(query, k=5)
        latencies.append((time.perf_counter() - t0) * 1000)
    assistant.close()

    e2e_rate = summary["chunks_added"] / summary["seconds"]
    onnx_median = (onnx_before + onnx_after) / 2
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
        "raw_onnx_encode_chunks_per_s_before": round(onnx_before, 1),
        "raw_onnx_encode_chunks_per_s_after": round(onnx_after, 1),
        "raw_onnx_encode_chunks_per_s": round(onnx_median, 1),
        "torch_sample_chunks": len(torch_texts),
        "raw_torch_encode_chunks_per_s": round(torch_rate, 1),
        "ratio_end_to_end_vs_raw_onnx": round(e2e_rate / onnx_median, 3),
        "ratio_end_to_end_vs_raw_torch": round(e2e_rate / torch_rate, 3),
        "reindex_unchanged_seconds": round(again["seconds"], 3),
        "reindex_unchanged_seconds_per_10k_files": round(again["seconds"] / again["files_seen"] * 10000, 2),
        "reindex_unchanged_counts": {k: again[k] for k in ("indexed", "unchanged", "removed")},
        "retrieval_queries": len(latencies),
        "retrieval_ms_p50": round(percentile(latencies, 50), 2),
        "retrieval_ms_p95": round(percentile(latencies, 95), 2),
    })


if __name__ == "__main__":
    main()
