"""A long conversation: hundreds of turns in one chat, as the TUI holds it, on the default model.

Each turn reads the chat's history from chats.sqlite3, asks with it (the local route, notes on),
writes every streamed piece before "showing" it, and finishes the message, exactly the TUI's
order. Per turn: wall seconds, time to first token, the prompt's tokens and history turns kept,
the planner's tokenizer calls and the process's resident memory. The baselines are the same run's:
its first full-window turns (flat means the last turns cost what they cost), and a further
stretch of the same chat with the history fitted exactly (HISTORY_STEP_SHARE ~ 0, the planner
before it kept the prompt's start stable), which makes llama.cpp evaluate the whole window anew
for every question.

    .venv/bin/python bench/long_conversation.py --turns 300
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VAULT, save

QUESTIONS = [
    "How do I link to a heading in another note?",
    "And how do I embed just that section?",
    "What does a callout look like?",
    "Can I fold it by default?",
    "How do templates insert today's date?",
    "Where do daily notes go?",
    "How do I search only in one folder?",
    "Summarise what we said so far in one line.",
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--window", type=int, default=30, help="turns averaged at the start and at the end")
    parser.add_argument("--exact-fit-turns", type=int, default=20,
                        help="turns asked afterwards with the history fitted exactly (the baseline)")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="skiff-bench-chat-")
    os.environ.update(SKIFF_HOME=home, SKIFF_OFFLINE="true")
    from skiff.app.history import DONE, ChatHistory
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    settings = load_settings(max_tokens=args.max_tokens)
    assistant = Assistant(settings)
    assistant.index([VAULT / "en" / "Linking notes and files", VAULT / "en" / "Editing and formatting",
                     VAULT / "en" / "Plugins"])
    history = ChatHistory(settings.data_dir / "chats.sqlite3")
    chat = history.create()

    # Count the planner's tokenizer calls: its cost, the thing that must not grow with the chat.
    counted = {"calls": 0}
    real_count = assistant.model.count_tokens

    def counting(text: str) -> int:
        counted["calls"] += 1
        return real_count(text)

    assistant.model.count_tokens = counting
    import skiff.assistant.prompting as prompting

    rows = []
    for turn in range(args.turns + args.exact_fit_turns):
        if turn == args.turns:
            prompting.HISTORY_STEP_SHARE = 1e-9  # every question a possible start: the exact fit
        question = f"{QUESTIONS[turn % len(QUESTIONS)]} (turn {turn + 1})"
        started = time.perf_counter()
        turns = history.history_for(chat.id)
        history.add_question(chat.id, question)
        message = history.start_answer(chat.id)
        text = ""

        def show(piece: str) -> None:
            nonlocal text
            text += piece
            history.update_answer(message.id, text)  # noqa: B023 - used within this iteration only

        counted["calls"] = 0
        answer = assistant.ask(question, history=turns, route="local", on_token=show)
        history.finish_answer(message.id, answer.text, DONE, answer.id, {})
        seconds = time.perf_counter() - started
        rows.append({"turn": turn + 1, "seconds": seconds, "first_token_s": answer.timings.get("first_token_s"),
                     "prompt_tokens": answer.tokens.get("prompt"), "history_in": len(turns),
                     "planner_calls": counted["calls"], "rss_mb": rss_mb(),
                     "overflow": (answer.tokens.get("prompt") or 0) + args.max_tokens > settings.n_ctx})
        if (turn + 1) % 25 == 0:
            print(f"turn {turn + 1}: {seconds:.2f}s, {rows[-1]['prompt_tokens']} prompt tokens, "
                  f"{rows[-1]['rss_mb']:.0f} MB", file=sys.stderr)

    stored = len(history.messages(chat.id))
    history.close()
    assistant.close()

    def window(rows_part: list[dict]) -> dict:
        return {"median_turn_s": round(statistics.median(r["seconds"] for r in rows_part), 3),
                "mean_turn_s": round(statistics.mean(r["seconds"] for r in rows_part), 3),
                "max_turn_s": round(max(r["seconds"] for r in rows_part), 3),
                "median_first_token_s": round(statistics.median(r["first_token_s"] or 0 for r in rows_part), 3),
                "median_prompt_tokens": statistics.median(r["prompt_tokens"] or 0 for r in rows_part),
                "max_planner_calls": max(r["planner_calls"] for r in rows_part),
                "rss_mb_end": round(rows_part[-1]["rss_mb"], 1)}

    exact_fit = rows[args.turns:]
    rows = rows[:args.turns]
    # The window fills after a few turns; the baseline starts once it is full.
    full = next((i for i, r in enumerate(rows) if r["prompt_tokens"] and r["prompt_tokens"]
                 >= 0.8 * max(x["prompt_tokens"] or 0 for x in rows)), 0)
    first = rows[full: full + args.window]
    last = rows[-args.window:]
    figures = {
        "turns": args.turns, "max_tokens": args.max_tokens, "n_ctx": settings.n_ctx,
        "model": assistant.model_path.name, "messages_stored": stored,
        "window_full_at_turn": full + 1,
        "first_full_window_turns (baseline)": window(first),
        "last_turns": window(last),
        "rss_growth_mb_first_to_last": round(last[-1]["rss_mb"] - first[-1]["rss_mb"], 1),
        f"then {len(exact_fit)} turns fitted exactly (baseline)": window(exact_fit) if exact_fit else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "history_turns_in_last_question": rows[-1]["history_in"],
        "turns_whose_prompt_plus_answer_overflowed_the_window": sum(r["overflow"] for r in rows + exact_fit),
    }
    save(f"long_conversation_{args.turns}", figures)


if __name__ == "__main__":
    main()
