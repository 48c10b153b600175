"""local+ on the main job (issue 20): every way skiff can spend more local compute on a question,
run on the same questions as the default model's greedy answers, graded alike, rows on disk.

Questions and the greedy baseline come from skiff's own tables (bench/own_tables.py), answered
by the default model (Qwen2.5-Coder-1.5B):
    gsm8k: positions 100-299 of the seeded GSM8K order are the report set (the draft check was
        fitted on positions 0-99, which are the tune set here);
    notes: the notes set's test split is the report set, its dev split the tune set.
Each question is put in a stratum by the draft check as shipped, exactly as at run time: its
lowest confidence over its readings, against τ calibrated to the share of drafts skiff's default
shares escalate (15.8%: a 20% cloud share, 5% of it before any draft). "flagged" questions are
the ones the check finds unsure; local+ should earn its keep there. Runs take flagged questions
first, each stratum in seeded order, so a run stopped early is a fair sample of what it reached.

    flags                              strata for every question (no model)
    greedy --dataset gsm8k --cap 512   greedy again, at a larger cap, for answers the 400 cap cut
    greedy --dataset notes --limit 8   greedy again, timed, checked against the tables' text
    vote --dataset D --temperature T --cap C [--samples 7] [--part tune|report]
                                       sampled answers decoded together (ParallelSampler); votes
                                       over the first N are compared in the report
    context --dataset notes            the chunks a test-time LoRA would train on, put in the
                                       prompt instead (the cheaper alternative)
    ttt --dataset notes --select sift|nn
                                       a LoRA trained for the question (skiff's QuestionTuner), the
                                       answer written with it attached: on SIFT's chunks, or on as
                                       many nearest neighbours
    personal --dataset D [--cap 512] [--train-only]
                                       the personal adapter (`skiff tune`, trained on the bench
                                       notes outside the bench home), greedy answers with it on
    product --dataset D --method none|vote|context|lora
                                       `skiff ask` offline as shipped, only that method switched on:
                                       the product path's own time (the draft stopped early where
                                       the method does not need it)

Rows: bench/rows/local_plus/DATASET--METHOD--SETTINGS.jsonl, one per question, flushed; a rerun
skips questions done. bench/local_plus_report.py reads them. Timing figures are only taken from
runs that had the machine to themselves (the report says which).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cloud_pair import correct  # noqa: E402
from local_plus_strata import GREEDY_CAP, ROWS, compute_flags, in_run_order, load_flags  # noqa: E402
from own_tables import GSM8K_PROMPT, generate, open_rows, rows_done  # noqa: E402

def seed_of(question_id: str) -> int:
    return int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16)


# -- the model and each method --------------------------------------------------------------------

class Bench:
    """The default model as skiff runs it (the notes bench home: its index, its installed models)."""

    def __init__(self, dataset: str, threads: int) -> None:
        from notes_qa import open_assistant

        self.dataset = dataset
        self.assistant = open_assistant(n_threads=threads)
        self.settings = self.assistant.settings
        self.model = self.assistant.model
        self.notes = {item.id: item for item in _notes_items()} if dataset == "notes" else {}

    def messages(self, row: dict, hits=None):
        """The prompt the greedy row was answered from (notes: skiff's own, from its retrieval)."""
        from skiff.assistant.prompting import plan_prompt

        if self.dataset == "gsm8k":
            return [{"role": "user", "content": GSM8K_PROMPT.format(question=row["prompt"])}], None
        consulted = self.assistant.consult_notes(row["prompt"])
        plan = plan_prompt(self.model, row["prompt"], consulted.hits if hits is None else hits(consulted), (),
                           max_answer_tokens=GREEDY_CAP["notes"])
        return plan.messages, (consulted, plan)

    def grade(self, row: dict, text: str) -> bool:
        from qa_grading import grade

        if self.dataset == "gsm8k":
            return correct(text, row["gold"])
        return grade(self.notes[row["id"]], text).right


def _notes_items():
    from check_notes_qa import load

    return load()


def run_rows(args, method: str, settings: str, answer, bench: "Bench | None" = None) -> None:
    """`answer(bench, row)` for every question of the run not yet done, a row each, flushed."""
    path = ROWS / f"{args.dataset}--{method}--{settings}.jsonl"
    ROWS.mkdir(parents=True, exist_ok=True)
    done = rows_done(path)
    chosen = in_run_order(args.dataset, args.part, args.flagged, args.limit, args.not_flagged)
    todo = [row for row in chosen if row["id"] not in done]
    print(f"{path.name}: {len(done)} done, {len(todo)} to go", file=sys.stderr)
    if not todo:
        return
    bench = bench or Bench(args.dataset, args.threads)
    with open_rows(path) as sink:
        for number, row in enumerate(todo, start=1):
            started = time.perf_counter()
            record = answer(bench, row)
            record.update(id=row["id"], seconds=round(time.perf_counter() - started, 3),
                          load=round(os.getloadavg()[0], 2))
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
            sink.flush()
            print(f"\r{number}/{len(todo)} {record['seconds']:.0f}s", end="", file=sys.stderr)
    print(file=sys.stderr)


def greedy(args) -> None:
    """Greedy again: at a larger cap, only where the tables' cap cut the answer (greedy decoding is
    deterministic, so every other answer stands as it is); or, with --all, every question, timed."""
    cut_only = args.cap > GREEDY_CAP[args.dataset] and not args.all

    def answer(bench: Bench, row: dict) -> dict:
        if cut_only and row["stop_reason"] != "length":
            return {"kept": True, "response": row["response"], "correct": row["correct"],
                    "stop_reason": row["stop_reason"], "completion_tokens": row["completion_tokens"]}
        messages, _ = bench.messages(row)
        out = generate(bench.model, messages, args.cap)
        return {"response": out["response"], "correct": bench.grade(row, out["response"]),
                "stop_reason": out["stop_reason"], "completion_tokens": out["completion_tokens"],
                "prompt_tokens": out["prompt_tokens"], "same_as_table": out["response"] == row["response"]}

    run_rows(args, "greedy", f"cap{args.cap}" + ("-all" if args.all else ""), answer)


def vote(args) -> None:
    """`--samples` answers at `--temperature`, decoded together in one batch (skiff's sampler,
    as the local+ vote runs), each graded; votes are taken over prefixes in the report."""
    from skiff.local.sampling import ParallelSampler, SamplingStats

    samplers: dict[int, ParallelSampler] = {}

    def answer(bench: Bench, row: dict) -> dict:
        messages, _ = bench.messages(row)
        tokens = bench.model.tokenize_prompt(bench.model.render(messages))
        room = len(tokens) + args.samples * args.cap + 64
        size = 1024 * -(-room // 1024)
        if size not in samplers:
            for old in samplers.values():
                old.close()
            samplers.clear()
            samplers[size] = ParallelSampler(bench.model, max_sequences=args.samples, n_ctx=size)
        stats = SamplingStats()
        drawn = samplers[size].sample(tokens, args.samples, args.cap, temperature=args.temperature,
                                      seed=seed_of(row["id"]), stats=stats)
        return {"samples": [{"text": s.text, "tokens": s.tokens, "stop": s.stop_reason,
                             "correct": bench.grade(row, s.text)} for s in drawn],
                "sample_seconds": round(stats.seconds, 3), "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens, "capped_to": stats.capped_to}

    run_rows(args, "vote", f"T{args.temperature:g}-cap{args.cap}-n{args.samples}", answer)


def nearest(consulted, n: int):
    from skiff.assistant.question_adapter import TrainingSelection

    usable = [hit for hit in consulted.candidates if hit.embedding is not None]
    ranked = sorted(usable, key=lambda hit: -float(np.dot(hit.embedding, consulted.embedding)))
    return TrainingSelection(ranked[:n], [], f"nearest {n}")


def context(args) -> None:
    """SIFT's training chunks in the prompt, after the retrieved ones, no training (skiff's own
    "more notes" method: the same selection and the same merge)."""
    from skiff.assistant.local_plus import training_chunks, with_more_notes

    def answer(bench: Bench, row: dict) -> dict:
        chosen = {}

        def hits(consulted):
            chosen["selection"] = training_chunks(bench.settings, consulted)
            return with_more_notes(consulted.hits, chosen["selection"].chunks)

        messages, (_, plan) = bench.messages(row, hits)
        out = generate(bench.model, messages, GREEDY_CAP["notes"])
        return {"response": out["response"], "correct": bench.grade(row, out["response"]),
                "stop_reason": out["stop_reason"], "prompt_tokens": out["prompt_tokens"],
                "completion_tokens": out["completion_tokens"], "notes_in_prompt": len(plan.notes),
                "selected": len(chosen["selection"].chunks), "dropped": plan.notes_dropped}

    run_rows(args, "context", "sift", answer)


def ttt(args) -> None:
    """A LoRA trained on the question's chunks (SIFT's, or the same number of nearest ones), the
    greedy answer written with it attached from the same prompt, then the adapter dropped."""
    from dataclasses import replace

    from skiff.assistant.local_plus import training_chunks

    def answer(bench: Bench, row: dict) -> dict:
        tuner = bench.assistant.tuner
        if args.learning_rate:
            tuner.spec = replace(tuner.spec, learning_rate=args.learning_rate)
        messages, (consulted, plan) = bench.messages(row)
        selection = training_chunks(bench.settings, consulted)
        if args.select == "nn":
            selection = nearest(consulted, len(selection.chunks))
        tuned = tuner.adapt(selection)
        record = {"training": tuned.as_dict(), "chunks": [hit.id for hit in selection.chunks]}
        if tuned.path is None:
            out = generate(bench.model, messages, GREEDY_CAP["notes"])
        else:
            try:
                with bench.model.adapter(tuned.path):
                    out = generate(bench.model, messages, GREEDY_CAP["notes"])
            finally:
                tuned.path.unlink(missing_ok=True)
        record.update(response=out["response"], correct=bench.grade(row, out["response"]),
                      stop_reason=out["stop_reason"], completion_tokens=out["completion_tokens"])
        return record

    lr = f"-lr{args.learning_rate:g}" if args.learning_rate else ""
    run_rows(args, "ttt", f"{args.select}{lr}", answer)


PERSONAL = ROWS / "personal-adapter"


def personal(args) -> None:
    """The personal adapter (`skiff tune`: one LoRA step per indexed chunk of the bench notes),
    trained as the product trains it but kept outside the bench home, so no other run answers
    with it; then greedy answers with it under the model, from the greedy rows' prompts and caps.
    Training resumes from its last checkpoint; --train-only stops after it."""
    from skiff.assistant.personal_adapter import PersonalAdapter, tune_on_notes
    from skiff.local.llm import read_model_info

    bench = Bench(args.dataset, args.threads)
    assistant = bench.assistant
    adapter = PersonalAdapter(PERSONAL)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            print(f"\rtune {done}/{total} {time.perf_counter() - started:.0f}s", end="", file=sys.stderr)

    status = tune_on_notes(assistant.notes, adapter, assistant.model_path,
                           read_model_info(assistant.model_path).architecture, assistant.settings,
                           assistant._personal_key(), progress)
    print(f"\npersonal adapter: {status.describe()}", file=sys.stderr)
    if args.train_only or status.state != "ready":
        return
    bench.model.set_base_adapter(adapter.adapter_path)
    cap = args.cap or GREEDY_CAP[args.dataset]

    def answer(bench: Bench, row: dict) -> dict:
        messages, _ = bench.messages(row)
        out = generate(bench.model, messages, cap)
        return {"response": out["response"], "correct": bench.grade(row, out["response"]),
                "stop_reason": out["stop_reason"], "completion_tokens": out["completion_tokens"],
                "prompt_tokens": out["prompt_tokens"], "cap": cap}

    run_rows(args, "personal", "on", answer, bench)


def product(args) -> None:
    """The product's own path, timed end to end: `Assistant.ask` offline (auto route), with only
    `--method` switched on (or none: the draft alone), so an unsure draft gets the method as skiff
    runs it, early stop included. The notes check is off, as in the greedy rows."""
    methods = [] if args.method == "none" else [args.method]
    bench = Bench(args.dataset, args.threads)
    pinned = pin_draft_threshold(bench.assistant)

    def answer(bench: Bench, row: dict) -> dict:
        bench.assistant.settings.local_plus_methods = methods
        bench.assistant.settings.abstain = False
        got = bench.assistant.ask(row["prompt"])
        check = got.draft_check or {}
        return {"response": got.text, "correct": bench.grade(row, got.text), "unsure": check.get("unsure"),
                "confidence": check.get("confidence"),
                "replaced_by": check.get("replaced_by"), "allocation": got.allocation,
                "total_s": (got.timings or {}).get("total_s")}

    try:
        run_rows(args, "product", args.method, answer, bench)
    finally:
        pinned()


def pin_draft_threshold(assistant) -> Callable[[], None]:
    """The bench home's draft check held at the flags' τ for the run (the bench home's own τ comes
    from its history of benchmark drafts, and a run of flagged questions alone would move it), so
    the product reads a draft as unsure exactly where the strata say. Returns what restores it."""
    from skiff.router.draft_check import DraftThreshold
    from skiff.local.atomic import write_atomically

    check = assistant.draft_check()
    path = check.threshold_path
    before = path.read_bytes() if path.exists() else None
    flags = load_flags()
    # The share the run asks for, and a count far ahead, so the run itself never recalibrates.
    pinned = DraftThreshold(flags["tau"], assistant._drafts_to_escalate(), "local_plus_bench flags", 10**9)
    write_atomically(path, json.dumps(pinned.as_dict()).encode())

    def restore() -> None:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            write_atomically(path, before)

    return restore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("flags")
    for name in ("greedy", "vote", "context", "ttt", "product", "personal"):
        command = commands.add_parser(name)
        command.add_argument("--dataset", required=True, choices=["gsm8k", "notes"])
        command.add_argument("--part", default="report", choices=["tune", "report", "pooled"],
                             help="pooled: notes test, then dev (flags cross-fitted)")
        stratum = command.add_mutually_exclusive_group()
        stratum.add_argument("--flagged", action="store_true", help="only the questions the check flags")
        stratum.add_argument("--not-flagged", action="store_true", help="only the questions it does not flag")
        command.add_argument("--limit", type=int, default=0)
        command.add_argument("--threads", type=int, default=2)
        if name == "greedy":
            command.add_argument("--cap", type=int, required=True)
            command.add_argument("--all", action="store_true", help="every question, not only those cut")
        if name == "vote":
            command.add_argument("--temperature", type=float, required=True)
            command.add_argument("--cap", type=int, required=True)
            command.add_argument("--samples", type=int, default=7)
        if name == "personal":
            command.add_argument("--cap", type=int, default=0, help="default: the greedy rows' cap")
            command.add_argument("--train-only", action="store_true")
        if name == "product":
            command.add_argument("--method", required=True, choices=["none", "vote", "context", "lora"])
        if name == "ttt":
            command.add_argument("--select", required=True, choices=["sift", "nn"])
            command.add_argument("--learning-rate", type=float, default=0.0, help="default: skiff's setting")
    args = parser.parse_args()
    if args.command == "flags":
        flags = compute_flags()
        for dataset in ("gsm8k", "notes"):
            for part in ("tune", "report"):
                chosen = [q for q in flags["questions"].values() if q["dataset"] == dataset and q["part"] == part]
                flagged = [q for q in chosen if q["flagged"]]
                right = sum(q["greedy_right"] for q in flagged)
                print(f"{dataset} {part}: {len(flagged)}/{len(chosen)} flagged (τ {flags['tau']:.3f}); greedy right "
                      f"{right}/{len(flagged)} flagged, {sum(q['greedy_right'] for q in chosen) - right}/"
                      f"{len(chosen) - len(flagged)} not")
        dev = [q for q in flags["questions"].values() if "cross_fit_flagged" in q]
        print(f"notes dev, cross-fitted: {sum(q['cross_fit_flagged'] for q in dev)}/{len(dev)} flagged; greedy right "
              f"{sum(q['greedy_right'] for q in dev if q['cross_fit_flagged'])} of them")
        return
    {"greedy": greedy, "vote": vote, "context": context, "ttt": ttt, "product": product,
     "personal": personal}[args.command](args)


if __name__ == "__main__":
    main()
