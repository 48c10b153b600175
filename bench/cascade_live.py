"""The cascade live, through skiff's own answer path (`Assistant.ask`, what `skiff ask` runs), with a
real loopback "cloud": the local model drafts, the draft check decides, the cloud answers what it
escalates. Beside it, on the same questions and at the same cloud share, in the same run:

- cascade: skiff as it ships (a small share sent before any draft, the draft check sending the rest);
- before the draft only: the router deciding from the question alone (`check_drafts = false`),
  calibrated to the same share;
- random: the same share of each dataset's questions sent to the cloud, drawn by a seeded shuffle.

Local: a small local model (default Qwen2.5-Coder-0.5B, whose draft check ships). Cloud:
Qwen2.5-Coder-1.5B behind llama-cpp-python's OpenAI-compatible server on 127.0.0.1, started here
(the strongest model that runs on this machine; see bench/RESULTS.md for the GPT-4 column).
Questions: the notes set's test split (graded as bench/notes_qa.py grades) and, with --gsm8k N,
N GSM8K questions from the held-out half of bench/own_tables.py's order.

Each policy keeps its own records and router state (a copy of the bench home's index), so one
policy's calibration never sees another's questions. Before answering, each is warmed up as a
person who has asked before: the notes dev split's questions and GSM8K questions from the fitted
half (in the measured mix's proportion) are decided and recorded, unanswered and unlabelled, and
the thresholds calibrated on them. Rows on disk, resumable:
bench/out/cascade_live/POLICY--DATASET.jsonl.

    .venv/bin/python bench/cascade_live.py --share 0.3 [--gsm8k 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_notes_qa import load  # noqa: E402
from cloud_pair import correct  # noqa: E402
from common import OUT  # noqa: E402
from notes_qa import HOME, NOTES, bootstrap_mean, resolve_model  # noqa: E402
from own_tables import GSM8K_PROMPT, gsm8k_items, rows_done  # noqa: E402
from qa_grading import grade  # noqa: E402

LIVE = OUT / "cascade_live"
POLICIES = ("cascade", "before the draft only", "random")
SEED = 20261130
KEY = "sk-cascade-live-" + "x" * 16  # loopback only; never leaves the machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cloud(model: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "cloud",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", str(threads)],
        env={**os.environ, "API_KEY": KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, base
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit("the loopback cloud did not start")


def policy_home(policy: str) -> Path:
    """A home of its own per policy: the bench home's index copied, its models linked."""
    home = LIVE / "homes" / policy.replace(" ", "-")
    data = home / "data"
    if not (data / "index").exists():
        data.mkdir(parents=True, exist_ok=True)
        shutil.copytree(HOME / "data" / "index", data / "index")
        (data / "models").symlink_to((HOME / "data" / "models").resolve())
        (home / "cache").symlink_to((HOME / "cache").resolve())
    return home


def open_policy(policy: str, local: Path, base_url: str, share: float, threads: int, gsm8k: int):
    os.environ["SKIFF_HOME"] = str(policy_home(policy))
    os.environ["SKIFF_CLOUD_API_KEY"] = KEY
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    settings = load_settings(model_path=local, cloud_base_url=base_url, cloud_model="cloud", offline=False,
                             cloud_context_tokens=8192, n_threads=threads, cloud_share=share,
                             local_plus_share=0.0, check_drafts=policy == "cascade")
    assistant = Assistant(settings)
    assistant.index([NOTES])
    if assistant.records.decision_total() == 0:
        warm_up(assistant, share, gsm8k)
    return assistant


def warm_up(assistant, share: float, gsm8k: int) -> None:
    """As a person who has asked before: questions like the measured ones, but never them, are
    decided and recorded (unanswered, unlabelled), so each policy's thresholds are calibrated on
    questions like the ones it is measured on, not on the everyday questions skiff ships for a new
    person. The notes dev split, and GSM8K questions from the fitted half in the measured mix's
    proportion (so that a math question is not out of everything the thresholds have seen)."""
    from skiff.router.records import new_answer_id

    dev = [item.question for item in load() if item.split == "dev"]
    tests = sum(1 for item in load() if item.split == "test")
    order = gsm8k_items()
    fitted_half = [GSM8K_PROMPT.format(question=item["prompt"]) for item in order[: len(order) // 2]]
    asked = [(question, True) for question in dev]
    asked += [(question, False) for question in fitted_half[: round(gsm8k * len(dev) / tests)]]
    for question, use_notes in asked:
        decision = assistant.decide(question, use_notes=use_notes)
        assistant.records.start(new_answer_id(), question, decision, "local", "warm-up")
    assistant.calibrate(cloud_share=share, local_plus_share=0.0)


def questions(gsm8k: int) -> list[dict]:
    notes = [{"id": item.id, "dataset": "notes", "question": item.question, "item": item}
             for item in load() if item.split == "test"]
    order = gsm8k_items()
    held = order[len(order) // 2:][:gsm8k] if gsm8k else []
    return notes + [{"id": item["id"], "dataset": "gsm8k", "gold": item["gold"],
                     "question": GSM8K_PROMPT.format(question=item["prompt"])} for item in held]


def sent_by_the_coin(items: list[dict], share: float) -> set[str]:
    """Exactly `share` of each dataset's questions, drawn by a seeded shuffle (the same on a resume)."""
    rng = random.Random(SEED)
    chosen = set()
    for dataset in ("notes", "gsm8k"):
        ids = sorted(item["id"] for item in items if item["dataset"] == dataset)
        rng.shuffle(ids)
        chosen.update(ids[: round(share * len(ids))])
    return chosen


def run_policy(policy: str, items: list[dict], args, base_url: str) -> None:
    path = LIVE / f"{policy.replace(' ', '-')}.jsonl"
    done = rows_done(path)
    todo = [item for item in items if item["id"] not in done]
    if not todo:
        return
    assistant = open_policy(policy, resolve_model(args.local), base_url, args.share, args.threads, args.gsm8k)
    to_the_cloud = sent_by_the_coin(items, args.share)
    with path.open("a", encoding="utf-8") as sink:
        for number, item in enumerate(todo, start=1):
            route = None
            if policy == "random":
                route = "cloud" if item["id"] in to_the_cloud else "local"
            answer = assistant.ask(item["question"], use_notes=item["dataset"] == "notes", route=route)
            right = (grade(item["item"], answer.text).right if item["dataset"] == "notes"
                     else correct(answer.text, item["gold"]))
            row = {"id": item["id"], "dataset": item["dataset"], "right": right, "answered_by": answer.answered_by,
                   "route": answer.route, "draft_check": answer.draft_check, "timings": answer.timings,
                   "answerable": item["item"].answerable if item["dataset"] == "notes" else True}
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(f"\r{policy}: {number}/{len(todo)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    assistant.close()


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report(items: list[dict], share: float) -> None:
    rng = random.Random(SEED)
    print(f"\nlive, target cloud share {share:.0%}; accuracy with 95% bootstrap intervals\n")
    for dataset in ("notes", "gsm8k", "both"):
        ids = {item["id"] for item in items if dataset in (item["dataset"], "both")}
        if not ids:
            continue
        print(f"**{dataset}** ({len(ids)} questions)\n")
        print("| policy | accuracy | answerable right | sent to the cloud | before a draft | after a draft | "
              "check's own time (median) | drafting before an escalation (median) |")
        print("|---|---|---|---|---|---|---|---|")
        for policy in POLICIES:
            rows = [row for key, row in rows_done(LIVE / f"{policy.replace(' ', '-')}.jsonl").items() if key in ids]
            if not rows:
                continue
            right = [float(row["right"]) for row in rows]
            answerable = [float(row["right"]) for row in rows if row["answerable"]]
            low, high = bootstrap_mean(right, rng)
            cloud = [row for row in rows if row["answered_by"] == "cloud"]
            after = [row for row in cloud if (row["draft_check"] or {}).get("escalated")]
            checks = [row["draft_check"] for row in rows if row["draft_check"]]
            check_ms = median([c["check_ms"] for c in checks if c.get("check_ms") is not None])
            draft_s = median([c["draft_s"] for c in checks if c.get("escalated") and c.get("draft_s") is not None])
            print(f"| {policy} | {statistics.fmean(right):.1%} [{low:.1%}, {high:.1%}] | "
                  f"{statistics.fmean(answerable):.1%} | {len(cloud) / len(rows):.1%} | "
                  f"{(len(cloud) - len(after)) / len(rows):.1%} | {len(after) / len(rows):.1%} | "
                  f"{'—' if check_ms is None else f'{check_ms:.2f} ms'} | "
                  f"{'—' if draft_s is None else f'{draft_s:.2f} s'} |")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", default="qwen2.5-coder-0.5b", help="the local model (a `skiff model` name)")
    parser.add_argument("--cloud", default="qwen2.5-coder-1.5b", help="the loopback cloud's model")
    parser.add_argument("--share", type=float, default=0.3, help="the cloud share every policy is calibrated to")
    parser.add_argument("--gsm8k", type=int, default=0, help="also N GSM8K questions (held-out half)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only print the table from the rows on disk")
    args = parser.parse_args()
    items = questions(args.gsm8k)
    LIVE.mkdir(parents=True, exist_ok=True)
    if not args.report:
        server, base_url = start_cloud(resolve_model(args.cloud), args.threads)
        try:
            for policy in POLICIES:
                run_policy(policy, items, args, base_url)
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(items, args.share)


if __name__ == "__main__":
    main()
