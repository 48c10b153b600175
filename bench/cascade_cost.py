"""What the draft check costs a question that stays local: the same local answers written twice,
with the check reading the draft (per-token log-probabilities and entropies recorded, read after
32 tokens and at the end) and without, in alternating order, on the same prompts; greedy, so
both write the same text. Reports the median extra time per answer, the check's own time, and
the decode speed either way; and, with τ calibrated to the default settings' share of drafts,
the drafting time an escalated draft costs: up to the reading that found it unsure (the prompt is
already evaluated then, as the notes check evaluates it before the draft starts). Run it alone on
the machine (it times things).

    .venv/bin/python bench/cascade_cost.py --model qwen2.5-coder-1.5b --n 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_notes_qa import load  # noqa: E402
from notes_qa import open_assistant, resolve_model, retrieval_configs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--n", type=int, default=30, help="notes test questions (answerable), in order")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from skiff.assistant.answering import stream_plan
    from skiff.assistant.cascade import DraftWatch
    from skiff.assistant.prompting import plan_prompt
    from skiff.assistant.retrieval import retrieve
    from skiff.config import load_settings
    from skiff.local.llm import LocalModel
    from skiff.router.draft_check import DraftCheck, share_of_drafts

    assistant = open_assistant()
    config = retrieval_configs()["hybrid RRF top-5"]
    path = resolve_model(args.model)
    model = LocalModel(path, n_ctx=4096, n_threads=args.threads)
    settings = load_settings(max_tokens=384)
    check = DraftCheck(settings.router_dir, path.name)
    share = share_of_drafts(settings.cloud_share, settings.cloud_share_before_draft, settings.local_plus_share)
    check.calibrate(share, [], 0)
    escalated_s = []  # drafting until the reading that would have escalated it
    items = [item for item in load() if item.split == "test" and item.answerable][: args.n]
    extra, check_ms, speed = [], [], {"checked": [], "plain": []}
    for number, item in enumerate(items):
        found = retrieve(assistant.notes, item.question, assistant.embedder.encode_query(item.question), config)
        plan = plan_prompt(model, item.question, found.selected, (), max_answer_tokens=settings.max_tokens)
        stream_plan(model, settings, plan, None, None)  # warm: the prompt is in llama.cpp's cache for both
        seconds = {}
        for kind in (("checked", "plain") if number % 2 == 0 else ("plain", "checked")):
            started = time.perf_counter()
            if kind == "checked":
                watch = DraftWatch(check, [hit.text for hit in plan.notes], stop_when_unsure=False, cancel=None)
                generated = stream_plan(model, settings, plan, None, None, confidence=watch.confidence,
                                        should_stop=watch.should_stop)
                verdict = watch.finish(generated.stop_reason)
                check_ms.append((verdict.check_ms or 0) + ((watch.early.check_ms or 0) if watch.early else 0))
                deciding = watch.early if watch.early is not None and watch.early.unsure else verdict
                if deciding.unsure:
                    escalated_s.append(deciding.draft_s)
            else:
                generated = stream_plan(model, settings, plan, None, None)
            seconds[kind] = time.perf_counter() - started
            if generated.decode_tokens_per_s:
                speed[kind].append(generated.decode_tokens_per_s)
        extra.append((seconds["checked"] - seconds["plain"]) * 1000)
        print(f"\r{number + 1}/{len(items)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    print(f"\n{args.model}, {len(items)} notes answers written twice (alternating order, prompt cached):\n")
    print("| measure | median | mean |\n|---|---|---|")
    print(f"| extra time per answer with the check | {statistics.median(extra):.1f} ms | "
          f"{statistics.fmean(extra):.1f} ms |")
    print(f"| the check's own time (both readings) | {statistics.median(check_ms):.2f} ms | "
          f"{statistics.fmean(check_ms):.2f} ms |")
    for kind in ("plain", "checked"):
        print(f"| decode tokens/s, {kind} | {statistics.median(speed[kind]):.2f} | "
              f"{statistics.fmean(speed[kind]):.2f} |")
    if escalated_s:
        print(f"| drafting before an escalation ({len(escalated_s)} of {len(items)} drafts unsure at τ for "
              f"{share:.0%} of drafts) | {statistics.median(escalated_s):.2f} s | "
              f"{statistics.fmean(escalated_s):.2f} s |")


if __name__ == "__main__":
    main()
