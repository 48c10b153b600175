"""Routing tables for skiff's own models (the cascade issue, part 1): every installable local model
answers a dataset; each answer is graded and kept with the model's confidence in it, token by
token, so that any signal can be recomputed later without running the model again.

    gsm8k: the GSM8K test questions of RouteLLM's table (../shared/data/routing/gsm8k_responses.csv),
        less its decontamination list, in a seeded order (any prefix is a fair sample); greedy,
        the answer graded against GSM8K's key; beside GPT-4-1106's correctness from that table.
    mmlu: the MMLU questions of RouteLLM's table (../shared/data/routing/mmlu), less its
        decontamination list, in a seeded order; graded against MMLU's answer key
        (bench/data/mmlu_key.tsv); beside GPT-4-1106's correctness.
    notes: the notes question set (bench/data/notes_qa_dev.jsonl) through skiff's own retrieval
        (hybrid, k 5) and prompt; graded as bench/notes_qa.py grades.
    sample: one short answer sampled at temperature 0.7 beside each notes row, for the agreement
        signal (rows in notes-sample--MODEL.jsonl).
    table: a RouteLLM-format CSV (prompt, weak, strong, weak's response) from the rows, for
        `skiff router eval`.

    .venv/bin/python bench/own_tables.py gsm8k --model qwen2.5-coder-1.5b [--limit 300]
    .venv/bin/python bench/own_tables.py notes --model qwen2.5-coder-0.5b --split all
    .venv/bin/python bench/own_tables.py table gsm8k --weak qwen2.5-coder-1.5b --strong gpt-4-1106-preview

Rows are appended to bench/rows/own_tables/DATASET--MODEL.jsonl as they come; a re-run skips those
done. Every row: the response, right or not, seconds, tokens, and the per-token log-probabilities
and entropies (rounded) with the token texts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cloud_pair import correct, gold_answer, load_questions  # noqa: E402
from common import ROWS, SHARED  # noqa: E402

TABLES = ROWS / "own_tables"  # every local+ and cascade figure is paired with these rows
ROUTING = SHARED / "data" / "routing"
GSM8K_PROMPT = "{question}\nSolve it step by step, then give the final number after ####."
MMLU_PROMPT = "{question}\nReply with the letter of the right choice, then one sentence on why."
MMLU_KEY = Path(__file__).resolve().parent / "data" / "mmlu_key.tsv"
GPT4 = "gpt-4-1106-preview"
SEED = 20261130
# The draft check is fitted on the first half of these GSM8K rows (seeded order) and reported on the
# second; rows collected beyond them (for other benchmarks) leave its figures as they were.
CHECK_ROWS = 200


def confidence_row(confidence) -> dict:
    return {"logprobs": [round(x, 3) for x in confidence.logprobs],
            "entropies": [round(x, 3) for x in confidence.entropies], "pieces": confidence.pieces}


def generate(model, messages: list[dict], max_tokens: int) -> dict:
    from skiff.local.llm import GenerationStats, TokenConfidence

    stats = GenerationStats(confidence=TokenConfidence())
    started = time.perf_counter()
    text = "".join(model.stream(model.tokenize_prompt(model.render(messages)), max_tokens, stats=stats))
    return {"response": text, "seconds": round(time.perf_counter() - started, 3), "stop_reason": stats.stop_reason,
            "completion_tokens": stats.completion_tokens, "prompt_tokens": stats.prompt_tokens,
            **confidence_row(stats.confidence)}


def gsm8k_items() -> list[dict]:
    """RouteLLM's GSM8K table, decontaminated as `skiff router eval` does, with GSM8K's answer key."""
    from skiff.router.research.routing_data import load_routing_data

    table = load_routing_data(ROUTING / "gsm8k_responses.csv", strong_col=GPT4)
    key = {item["question"].strip(): gold_answer(item["answer"]) for item in load_questions("test")}
    items = [{"id": f"gsm8k-{n:04d}", "prompt": prompt, "gold": key[prompt.strip()], GPT4: bool(strong)}
             for n, (prompt, strong) in enumerate(zip(table.prompts, table.strong)) if prompt.strip() in key]
    random.Random(SEED).shuffle(items)
    return items


def mmlu_items() -> list[dict]:
    """RouteLLM's MMLU table (43 subjects, decontaminated), with MMLU's answer key
    (bench/data/mmlu_key.tsv), in a seeded order (any prefix is a fair sample)."""
    import hashlib

    from skiff.router.research.routing_data import load_routing_data

    table = load_routing_data(ROUTING / "mmlu", strong_col=GPT4)
    key = {}
    for line in MMLU_KEY.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            digest, answer = line.split("\t")
            key[digest] = answer
    items = [{"id": f"mmlu-{n:05d}", "prompt": prompt, "gold": key[digest], GPT4: bool(strong)}
             for n, (prompt, strong) in enumerate(zip(table.prompts, table.strong))
             if (digest := hashlib.sha256(prompt.encode()).hexdigest()[:16]) in key]
    random.Random(SEED).shuffle(items)
    return items


def mmlu_letter(text: str) -> str | None:
    """The letter an answer chooses: "answer is (B)", "B." or "B)" at a line's start, else the first
    standalone capital A-D."""
    import re

    for pattern in (r"answer is[:\s]*\(?([ABCD])\b", r"(?m)^\s*\(?([ABCD])[.):]", r"\b([ABCD])\b"):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    return None


def rows_done(path: Path) -> dict[str, dict]:
    """The rows written so far; a line cut short by a kill is left out (its question runs again)."""
    if not path.exists():
        return {}
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[row["id"]] = row
    return rows


def open_rows(path: Path):
    """The rows file for appending, after a newline if a kill left the last line without one."""
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        with path.open("a", encoding="utf-8") as sink:
            sink.write("\n")
    return path.open("a", encoding="utf-8")


def run_graded(args, dataset: str, items: list[dict], prompt: str, is_right) -> None:
    """Every item answered greedily by the model, graded by `is_right(response, gold)`, beside
    GPT-4-1106's correctness; rows appended as they come, those done skipped."""
    from notes_qa import resolve_model

    from skiff.local.llm import LocalModel

    items = items[args.start: args.limit or None]
    path = TABLES / f"{dataset}--{args.model}.jsonl"
    TABLES.mkdir(parents=True, exist_ok=True)
    done = rows_done(path)
    todo = [item for item in items if item["id"] not in done]
    print(f"{len(items)} {dataset} questions ({len(done)} done)", file=sys.stderr)
    if not todo:
        return
    model = LocalModel(resolve_model(args.model), n_ctx=2048, n_threads=args.threads)
    with open_rows(path) as sink:
        for number, item in enumerate(todo, start=1):
            messages = [{"role": "user", "content": prompt.format(question=item["prompt"])}]
            row = {"id": item["id"], "prompt": item["prompt"], **generate(model, messages, args.max_tokens)}
            row.update(correct=is_right(row["response"], item["gold"]), gold=item["gold"], strong=item[GPT4],
                       load=round(os.getloadavg()[0], 2))
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            print(f"\r{number}/{len(todo)}", end="", file=sys.stderr)
    print(file=sys.stderr)


def run_gsm8k(args) -> None:
    run_graded(args, "gsm8k", gsm8k_items(), GSM8K_PROMPT, correct)


def run_mmlu(args) -> None:
    run_graded(args, "mmlu", mmlu_items(), MMLU_PROMPT, lambda response, gold: mmlu_letter(response) == gold)


def run_notes(args) -> None:
    from check_notes_qa import load
    from notes_qa import choose, open_assistant, resolve_model, retrieval_configs
    from qa_grading import grade

    from skiff.assistant.prompting import plan_prompt
    from skiff.assistant.retrieval import retrieve
    from skiff.local.llm import LocalModel

    items = choose(load(), args.split)
    path = TABLES / f"notes--{args.model}.jsonl"
    TABLES.mkdir(parents=True, exist_ok=True)
    done = rows_done(path)
    todo = [item for item in items if item.id not in done]
    print(f"{len(items)} notes questions ({len(done)} done)", file=sys.stderr)
    if not todo:
        return
    assistant = open_assistant()
    config = retrieval_configs()["hybrid RRF top-5"]
    model = LocalModel(resolve_model(args.model), n_ctx=4096, n_threads=args.threads)
    with open_rows(path) as sink:
        for number, item in enumerate(todo, start=1):
            found = retrieve(assistant.notes, item.question, assistant.embedder.encode_query(item.question), config)
            plan = plan_prompt(model, item.question, found.selected, (), max_answer_tokens=args.max_tokens)
            row = {"id": item.id, "prompt": item.question, "split": item.split, "answerable": item.answerable,
                   "sources": [hit.path for hit in plan.notes], "coverage": round(found.coverage, 4),
                   "chunks": [hit.text for hit in plan.notes],  # for the support signal, recomputable
                   **generate(model, plan.messages, args.max_tokens)}
            row["correct"] = grade(item, row["response"]).right
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")
            sink.flush()
            print(f"\r{number}/{len(todo)}", end="", file=sys.stderr)
    print(file=sys.stderr)


def run_sample(args) -> None:
    """One short sampled answer beside each notes row's greedy one, for the "agreement with a
    sample" signal (a cheap extra call, if it pays): the same retrieval and prompt, temperature
    0.7, seeded, `--max-tokens` long."""
    from notes_qa import open_assistant, resolve_model, retrieval_configs

    from skiff.assistant.prompting import plan_prompt
    from skiff.assistant.retrieval import retrieve
    from skiff.local.llm import GenerationStats, LocalModel

    greedy = rows_done(TABLES / f"notes--{args.model}.jsonl")
    path = TABLES / f"notes-sample--{args.model}.jsonl"
    done = rows_done(path)
    todo = [row for key, row in greedy.items() if key not in done]
    print(f"{len(greedy)} notes rows ({len(done)} sampled)", file=sys.stderr)
    if not todo:
        return
    assistant = open_assistant()
    config = retrieval_configs()["hybrid RRF top-5"]
    model = LocalModel(resolve_model(args.model), n_ctx=4096, n_threads=args.threads, seed=SEED)
    with open_rows(path) as sink:
        for number, row in enumerate(todo, start=1):
            found = retrieve(assistant.notes, row["prompt"], assistant.embedder.encode_query(row["prompt"]), config)
            plan = plan_prompt(model, row["prompt"], found.selected, (), max_answer_tokens=args.max_tokens)
            stats = GenerationStats()
            started = time.perf_counter()
            text = "".join(model.stream(plan.prompt_tokens, args.max_tokens, temperature=0.7, stats=stats))
            sink.write(json.dumps({"id": row["id"], "sample": text, "seconds": round(time.perf_counter() - started, 3),
                                   "completion_tokens": stats.completion_tokens}, ensure_ascii=False) + "\n")
            sink.flush()
            print(f"\r{number}/{len(todo)}", end="", file=sys.stderr)
    print(file=sys.stderr)


def fit_part(dataset: str, rows: dict[str, dict]) -> set[str]:
    """The rows a fit may use: the notes dev split, or the first half of the GSM8K rows in their
    seeded order (bench/fit_draft_check.py holds the rest out the same way)."""
    if dataset == "notes":
        return {key for key, row in rows.items() if row["split"] == "dev"}
    order = {item["id"]: n for n, item in enumerate(gsm8k_items())}
    ranked = sorted(rows, key=order.__getitem__)[:CHECK_ROWS]
    return set(ranked[: len(ranked) // 2])


def run_table(args) -> None:
    weak = rows_done(TABLES / f"{args.dataset}--{args.weak}.jsonl")
    if args.strong == GPT4:
        strong = {key: {"correct": row["strong"]} for key, row in weak.items()}
    else:
        strong = rows_done(TABLES / f"{args.dataset}--{args.strong}.jsonl")
    shared = [key for key in weak if key in strong]
    if args.part == "fit":
        chosen = fit_part(args.dataset, weak)
        shared = [key for key in shared if key in chosen]
    out = args.out or TABLES / f"{args.dataset}--{args.weak}--{args.strong}--{args.part}_responses.csv"
    with_notes = args.dataset == "notes"
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        header = ["prompt", args.weak, args.strong, f"{args.weak}_response"]
        writer.writerow(header + (["sigma2"] if with_notes else []))
        for key in shared:
            row = weak[key]
            writer.writerow([row["prompt"], row["correct"], strong[key]["correct"], row["response"]]
                            + ([row["coverage"]] if with_notes else []))
    print(f"{len(shared)} rows -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("gsm8k", "mmlu", "notes"):
        command = commands.add_parser(name)
        command.add_argument("--model", required=True, help="a `skiff model list` name or a GGUF path")
        command.add_argument("--threads", type=int, default=2)
        command.add_argument("--max-tokens", type=int, default={"gsm8k": 400, "mmlu": 64}.get(name, 384))
        if name in ("gsm8k", "mmlu"):
            command.add_argument("--limit", type=int, default=0, help="the first N of the seeded order")
            command.add_argument("--start", type=int, default=0, help="from this position of the order on")
        else:
            command.add_argument("--split", default="all", choices=["dev", "test", "all"])
    sample = commands.add_parser("sample", help="one short sampled answer per notes row (agreement signal)")
    sample.add_argument("--model", required=True)
    sample.add_argument("--threads", type=int, default=2)
    sample.add_argument("--max-tokens", type=int, default=32)
    table = commands.add_parser("table")
    table.add_argument("dataset", choices=["gsm8k", "notes"])
    table.add_argument("--weak", required=True)
    table.add_argument("--strong", required=True, help=f"a model name, or {GPT4} (gsm8k)")
    table.add_argument("--part", default="all", choices=["all", "fit"],
                       help="fit: only the rows a fit may use (notes dev split, the first GSM8K half)")
    table.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    {"gsm8k": run_gsm8k, "mmlu": run_mmlu, "notes": run_notes, "sample": run_sample,
     "table": run_table}[args.command](args)


if __name__ == "__main__":
    main()
