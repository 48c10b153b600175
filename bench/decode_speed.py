"""Local decode speed: skiff's answer pipeline vs llama-cpp-python called directly.

    .venv/bin/python bench/decode_speed.py [--runs 5] [--tokens 256]

Same GGUF (the bundled SmolLM2-135M-Instruct unless --model), same thread count, same prompt
tokens, same sampling settings; runs alternate (A B A B ...) so drift hits both equally. Decode
speed counts tokens after the first, over the time from the first to the last token.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import save  # noqa: E402

QUESTION = "Write a long, detailed story about a lighthouse keeper and a storm at sea."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()

    import os

    os.environ["SKIFF_HOME"] = tempfile.mkdtemp(prefix="skiff-bench-")
    from llama_cpp import Llama

    from skiff.local.assets import bundled_gguf_path
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    model_path = args.model or bundled_gguf_path()
    settings = load_settings(model_path=model_path, n_threads=args.threads, max_tokens=args.tokens, n_ctx=2048)
    assistant = Assistant(settings)
    prompt_tokens = assistant.model.tokenize_prompt(
        assistant.model.render([{"role": "system", "content": "You are a storyteller."},
                                {"role": "user", "content": QUESTION}])
    )
    direct = Llama(model_path=str(model_path), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads,
                   seed=0, verbose=False)

    def run_direct() -> tuple[float, int]:
        first = last = None
        count = 0
        for _ in direct.create_completion(prompt_tokens, max_tokens=args.tokens, temperature=0.0, top_k=40,
                                          top_p=0.95, min_p=0.05, repeat_penalty=1.1, stream=True):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
        return (count - 1) / (last - first), count

    def run_skiff() -> tuple[float, int]:
        # The same path as `skiff ask --no-notes`: plan, generate, record.
        answer = assistant.ask(QUESTION, use_notes=False)
        return answer.timings["decode_tokens_per_s"], answer.tokens["completion"]

    run_direct(), run_skiff()  # warm both
    direct_rates, skiff_rates, direct_tokens, skiff_tokens = [], [], [], []
    for _ in range(args.runs):
        rate, count = run_direct()
        direct_rates.append(rate)
        direct_tokens.append(count)
        rate, count = run_skiff()
        skiff_rates.append(rate)
        skiff_tokens.append(count)
    skiff_median, direct_median = statistics.median(skiff_rates), statistics.median(direct_rates)
    save("decode_speed", {
        "model": model_path.name,
        "threads": args.threads,
        "runs": args.runs,
        "max_tokens": args.tokens,
        "skiff_tokens_per_run": skiff_tokens,
        "direct_tokens_per_run": direct_tokens,
        "skiff_decode_tok_s": [round(r, 1) for r in skiff_rates],
        "direct_decode_tok_s": [round(r, 1) for r in direct_rates],
        "skiff_median_tok_s": round(skiff_median, 1),
        "direct_median_tok_s": round(direct_median, 1),
        "ratio_skiff_over_direct": round(skiff_median / direct_median, 3),
    })
    assistant.close()


if __name__ == "__main__":
    main()
