"""Cloud client overhead: time to first token and tokens/s through skiff's CloudClient vs a
direct httpx stream and the openai SDK (when installed), against the same llama.cpp server on
loopback, same prompts, greedy, runs interleaved (order rotating) so machine noise hits all
three alike, and every request prefixed uniquely so none rides on the previous one's prompt cache.

    .venv/bin/python bench/cloud_client.py --runs 20

Starts llama-cpp-python's OpenAI-compatible server with the bundled SmolLM2 GGUF itself.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import save  # noqa: E402
from servers import LlamaServer  # noqa: E402

from skiff.cloud import CloudClient, CloudStats
from skiff.local.assets import bundled_gguf_path

PROMPTS = ["Explain what a hash table is.", "Write a haiku about the sea.", "List five uses of a paperclip.",
           "Why is the sky blue?"]


def via_skiff(server: LlamaServer, messages: list[dict], max_tokens: int) -> tuple[float, float, int]:
    with CloudClient(server.base_url, server.alias, server.api_key) as client:
        started = time.perf_counter()
        first = None
        count = 0
        for _ in client.stream_chat(messages, max_tokens=max_tokens, stats=CloudStats()):
            first = first or time.perf_counter()
            count += 1
        return first - started, time.perf_counter() - started, count


def via_httpx(server: LlamaServer, messages: list[dict], max_tokens: int) -> tuple[float, float, int]:
    """The least a client can do: POST, read lines, parse each data line's JSON."""
    body = {"model": server.alias, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": True}
    with httpx.Client(headers={"Authorization": f"Bearer {server.api_key}"}, timeout=60) as client:
        started = time.perf_counter()
        first = None
        count = 0
        with client.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    first = first or time.perf_counter()
                    count += 1
        return first - started, time.perf_counter() - started, count


def via_openai(server: LlamaServer, messages: list[dict], max_tokens: int) -> tuple[float, float, int]:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key)
    started = time.perf_counter()
    first = None
    count = 0
    for event in client.chat.completions.create(model=server.alias, messages=messages, max_tokens=max_tokens,
                                                temperature=0.0, stream=True):
        if event.choices and event.choices[0].delta.content:
            first = first or time.perf_counter()
            count += 1
    client.close()
    return first - started, time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    clients = {"skiff": via_skiff, "httpx direct": via_httpx}
    try:
        import openai  # noqa: F401

        clients["openai SDK"] = via_openai
    except ImportError:
        print("openai is not installed: comparing with httpx only", file=sys.stderr)
    server = LlamaServer(bundled_gguf_path(), api_key="sk-bench-" + secrets.token_hex(8))
    try:
        for run in clients.values():  # warm-up: the server's first prompt is slower
            run(server, [{"role": "user", "content": PROMPTS[0]}], 8)
        samples = {name: {"ttft": [], "tps": [], "tokens": []} for name in clients}
        names = list(clients)
        for n in range(args.runs):
            # Each request gets its own prefix so none reuses llama.cpp's prompt cache from the one
            # before it, and the order rotates so no client always goes first.
            for offset in range(len(names)):
                name = names[(n + offset) % len(names)]
                messages = [{"role": "user", "content": f"(request {n}.{offset}) {PROMPTS[n % len(PROMPTS)]}"}]
                ttft, total, count = clients[name](server, messages, args.max_tokens)
                samples[name]["ttft"].append(ttft)
                samples[name]["tps"].append((count - 1) / (total - ttft) if count > 1 else 0.0)
                samples[name]["tokens"].append(count)
    finally:
        server.stop()
    figures = {name: {"ttft_ms_median": round(statistics.median(s["ttft"]) * 1000, 2),
                      "tokens_per_s_median": round(statistics.median(s["tps"]), 2),
                      "mean_tokens": round(statistics.mean(s["tokens"]), 1)} for name, s in samples.items()}
    base = figures["httpx direct"]
    figures["skiff vs httpx direct"] = {
        "tokens_per_s_ratio": round(figures["skiff"]["tokens_per_s_median"] / base["tokens_per_s_median"], 4),
        "ttft_ratio": round(figures["skiff"]["ttft_ms_median"] / base["ttft_ms_median"], 4),
    }
    save("cloud_client", {"runs": args.runs, "max_tokens": args.max_tokens, "model": "SmolLM2-135M Q4_1 via "
                          "llama_cpp.server", "clients": figures})


if __name__ == "__main__":
    main()
