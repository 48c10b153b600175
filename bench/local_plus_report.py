"""The report of bench/local_plus_bench.py: each local+ method beside greedy on the same questions,
by the draft check's stratum, with paired bootstrap intervals, and the decision rule applied.

    .venv/bin/python bench/local_plus_report.py [--greedy-cap 512] [--temperature 0.7] [--write]

A method is worth turning on for a stratum when, there, its paired gain over greedy has a 95%
interval above 0 with a point estimate of at least +5 points, and it takes at most 3× greedy's
time (a flagged question has its greedy draft already: the method's time is added to it; where
the product path was timed, `skiff ask` with the method against the draft alone decides). The
figures go to bench/rows/local_plus/report.json, the gains per second to local_plus_gains.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_plus_strata import FLAGS, GREEDY_CAP, ROWS, greedy_rows, questions  # noqa: E402
from notes_qa import bootstrap_mean, interval  # noqa: E402
from own_tables import rows_done  # noqa: E402

from skiff.assistant.voting import consensus_vote, majority_vote  # noqa: E402

MIN_GAIN, MAX_TIME = 0.05, 3.0
QUIET_LOAD = 2.6  # a row timed while the 1-minute load was above this shared the cores
MIN_PRODUCT_ROWS = 8

# Answers written instead of the greedy draft, not after it: their rows' seconds are the whole answer.
INSTEAD_OF_THE_DRAFT = {"personal adapter"}
# The methods `skiff ask` runs by these names (local_plus_methods) for the bench's labels.
PRODUCT_METHODS = {"SIFT chunks in context": "context", "test-time LoRA, SIFT": "lora"}


def load(dataset: str, name: str) -> dict[str, dict]:
    return rows_done(ROWS / f"{dataset}--{name}.jsonl")


def baseline(dataset: str, cap: int) -> dict[str, dict]:
    """Greedy at `cap`: the tables' answers, with those their cap cut answered again at `cap`."""
    table = greedy_rows(dataset)
    if cap == GREEDY_CAP[dataset]:
        return {key: {"response": row["response"], "correct": row["correct"], "stop_reason": row["stop_reason"]}
                for key, row in table.items()}
    return load(dataset, f"greedy--cap{cap}")


def vote_answers(draft: dict, row: dict, n: int, with_draft: bool, dataset: str) -> bool:
    """Right or not: the vote over the first n answers (the draft and n - 1 samples, or n samples)."""
    pool = ([{"text": draft["response"], "correct": draft["correct"]}] if with_draft else []) + row["samples"]
    pool = pool[:n]
    texts = [answer["text"] for answer in pool]
    chosen = (majority_vote(texts) if dataset == "gsm8k" else consensus_vote(texts)).chosen
    return bool(pool[chosen]["correct"])


def methods(dataset: str, greedy: dict, temperature: float, cap: int) -> dict[str, tuple[dict, dict]]:
    """{method: ({id: right}, {id: seconds beyond the draft})} for every method with rows."""
    found: dict[str, tuple[dict, dict]] = {}
    for path in sorted(ROWS.glob(f"{dataset}--vote--T{temperature:g}-cap{cap}-n7.jsonl")):
        rows = rows_done(path)
        for n in (3, 5, 8):
            right = {k: vote_answers(greedy[k], r, n, True, dataset) for k, r in rows.items() if k in greedy}
            found[f"vote {n} (draft + {n - 1} samples)"] = (right, _seconds(rows, f"n{n - 1}", dataset, temperature,
                                                                              cap))
        for n in (3, 5, 7):
            right = {k: vote_answers(greedy[k], r, n, False, dataset) for k, r in rows.items() if k in greedy}
            found[f"vote {n} (samples only)"] = (right, _seconds(rows, f"n{n}", dataset, temperature, cap))
        found["one sample"] = ({k: bool(r["samples"][0]["correct"]) for k, r in rows.items()},
                               _seconds(rows, "n1", dataset, temperature, cap))
    for name, label in (("context--sift", "SIFT chunks in context"), ("ttt--sift", "test-time LoRA, SIFT"),
                        ("ttt--nn", "test-time LoRA, nearest neighbours"), ("personal--on", "personal adapter")):
        rows = load(dataset, name)
        if rows:
            # Loading the training copy is once per session, not per question: left out here.
            found[label] = ({k: bool(r["correct"]) for k, r in rows.items()},
                            {k: r["seconds"] - r.get("training", {}).get("load_seconds", 0) for k, r in rows.items()
                             if r.get("load", 0) <= QUIET_LOAD})
    return found


def _seconds(rows: dict, batch: str, dataset: str, temperature: float, cap: int) -> dict:
    """Seconds for a batch of that many samples: from a timing run of that size when there is one
    (quiet rows only), else nothing (the vote's time is then unknown, not guessed)."""
    timed = load(dataset, f"vote--T{temperature:g}-cap{cap}-{batch}")
    if batch == "n7":
        timed = rows
    return {k: r["sample_seconds"] for k, r in timed.items() if r.get("load", 0) <= QUIET_LOAD}


def greedy_seconds(dataset: str, cap: int) -> list[float]:
    """Greedy's own time: a timing run's rows, else the tables' answers that finished within their
    cap beside those the cap cut, answered again at `cap`."""
    rows = load(dataset, f"greedy--cap{cap}-all") or load(dataset, f"greedy--cap{GREEDY_CAP[dataset]}-all")
    if not rows:
        rows = {k: r for k, r in greedy_rows(dataset).items() if r["stop_reason"] != "length"}
        rows |= {k: r for k, r in load(dataset, f"greedy--cap{cap}").items() if not r.get("kept")}
    return [r["seconds"] for r in rows.values() if r.get("load", 0) <= QUIET_LOAD]


def product_ratio(dataset: str, method: str | None, ids: list[str]) -> float | None:
    """`skiff ask` with the method switched on against the draft alone, as medians over the same
    questions (quiet rows only), where both have product rows (bench/local_plus_bench.py product)."""
    if method is None:
        return None
    alone, more = load(dataset, "product--none"), load(dataset, f"product--{method}")
    shared = [k for k in acted_on(ids, alone, more)
              if max(alone[k].get("load", 0), more[k].get("load", 0)) <= QUIET_LOAD]
    if len(shared) < MIN_PRODUCT_ROWS:
        return None
    return statistics.median(more[k]["seconds"] for k in shared) / statistics.median(alone[k]["seconds"]
                                                                                     for k in shared)


def acted_on(ids: list[str], alone: dict, more: dict) -> list[str]:
    """The questions whose draft the product itself read as unsure in the method's run (where the
    method runs unasked); a cross-fitted flag the shipped check does not share is left out."""
    return [k for k in ids if k in alone and k in more and more[k].get("unsure")]


def product_table(dataset: str, pooled: bool) -> None:
    """The product path itself: accuracy and seconds of `skiff ask` with each method switched on."""
    alone = load(dataset, "product--none")
    if not alone:
        return
    print("\n`skiff ask` itself, on the questions whose draft it read as unsure:\n\n"
          "| stratum | `skiff ask` with | n | right | median s | × the draft alone |\n|---|---|---|---|---|---|")
    for stratum, ids in strata(dataset, pooled).items():
        for method in ("none", *sorted(set(PRODUCT_METHODS.values()) | {"vote"})):
            rows = load(dataset, f"product--{method}")
            shared = acted_on(ids, alone, rows)
            if not shared:
                continue
            ratio = product_ratio(dataset, method, ids) if method != "none" else 1.0
            right = statistics.fmean(rows[k]["correct"] for k in shared)
            print(f"| {stratum} | {method} | {len(shared)} | {right:.1%} "
                  f"| {statistics.median(rows[k]['seconds'] for k in shared):.1f} | "
                  f"{'%.2f×' % ratio if ratio else '—'} |")


def compare(ids: list[str], greedy: dict, right: dict, key: str) -> dict | None:
    shared = [k for k in ids if k in right]
    if not shared:
        return None
    # Each comparison draws from its own seed, so adding a method or a stratum leaves every
    # other interval exactly as it was.
    rng = random.Random(key)
    base = [float(greedy[k]["correct"]) for k in shared]
    new = [float(right[k]) for k in shared]
    differences = [b - a for a, b in zip(base, new)]
    low, high = bootstrap_mean(differences, rng)
    acc_low, acc_high = bootstrap_mean(new, rng)
    return {"n": len(shared), "greedy": statistics.fmean(base), "accuracy": statistics.fmean(new),
            "accuracy_ci": [acc_low, acc_high], "gain": statistics.fmean(differences), "gain_ci": [low, high],
            "wrong_to_right": sum(d > 0 for d in differences) / len(shared),
            "right_to_wrong": sum(d < 0 for d in differences) / len(shared)}


def strata(dataset: str, pooled: bool) -> dict[str, list[str]]:
    flags = json.loads(FLAGS.read_text())["questions"]
    ids = [row["id"] for row in questions(dataset, "report") if row["id"] in flags]
    flagged = {k for k in ids if flags[k]["flagged"]}
    if pooled:
        dev = [row["id"] for row in questions(dataset, "tune") if row["id"] in flags]
        ids += dev
        flagged |= {k for k in dev if flags[k].get("cross_fit_flagged")}
    def confidence(k: str) -> float:
        mark = flags[k]
        return mark.get("cross_fit_confidence", mark["confidence"]) if pooled else mark["confidence"]

    ranked = sorted(ids, key=confidence)
    third = len(ranked) // 3
    return {"flagged": [k for k in ids if k in flagged], "not flagged": [k for k in ids if k not in flagged],
            "all": ids, "least confident third": ranked[:third], "middle third": ranked[third:2 * third],
            "most confident third": ranked[2 * third:]}


def report(args) -> dict:
    out: dict = {}
    sets = [("gsm8k", False, args.greedy_cap), ("notes", False, GREEDY_CAP["notes"]),
            ("notes", True, GREEDY_CAP["notes"])]
    for dataset, pooled, cap in sets:
        name = f"{dataset} {'pooled test + dev (cross-fitted flags)' if pooled else 'report set'}"
        greedy = baseline(dataset, cap)
        seconds = greedy_seconds(dataset, cap)
        base_s = statistics.median(seconds) if seconds else None
        temperature = args.temperature if dataset == "gsm8k" else args.notes_temperature
        vote_cap = cap if dataset == "gsm8k" else GREEDY_CAP["notes"]
        found = methods(dataset, greedy, temperature, vote_cap)
        print(f"\n### {name}: greedy (cap {cap}) {'%.1f s' % base_s if base_s else 'untimed'} per question "
              f"({len(seconds)} quiet timed)\n")
        print("| stratum | method | n | greedy | method | Δ [95% CI] | wrong→right | right→wrong | s beyond the "
              "draft | × greedy with the draft | on? |\n|---|---|---|---|---|---|---|---|---|---|---|")
        out[name] = {}
        for stratum, ids in strata(dataset, pooled).items():
            for method, (right, timing) in found.items():
                figures = compare(ids, greedy, right, f"{name}|{stratum}|{method}")
                if figures is None:
                    continue
                extra = [timing[k] for k in ids if k in timing]
                # Medians: a row the machine paused mid-way (a test run beside it) is an outlier, not a cost.
                figures["seconds"] = statistics.median(extra) if extra else None
                if method in INSTEAD_OF_THE_DRAFT and extra and base_s:
                    figures["seconds"] -= base_s  # its answer is the draft; only the difference is extra
                figures["time_ratio"] = (1 + figures["seconds"] / base_s) if extra and base_s else None
                # The product runs cover the flagged questions only: other strata keep the bench's time.
                own = product_ratio(dataset, PRODUCT_METHODS.get(method), ids) if stratum == "flagged" else None
                if own is not None:  # the product's own path (the draft stopped early) decides
                    figures["bench_time_ratio"], figures["time_ratio"] = figures["time_ratio"], own
                figures["on"] = (figures["gain_ci"][0] > 0 and figures["gain"] >= MIN_GAIN
                                 and figures["time_ratio"] is not None and figures["time_ratio"] <= MAX_TIME)
                out[name].setdefault(stratum, {})[method] = figures
                ratio = f"{figures['time_ratio']:.1f}×" if figures["time_ratio"] else "—"
                print(f"| {stratum} | {method} | {figures['n']} | {figures['greedy']:.1%} | {figures['accuracy']:.1%} "
                      f"| {100 * figures['gain']:+.1f} {interval(*figures['gain_ci'])} | "
                      f"{figures['wrong_to_right']:.1%} | {figures['right_to_wrong']:.1%} | "
                      f"{'%.1f' % figures['seconds'] if figures['seconds'] is not None else '—'} | {ratio} | "
                      f"{'yes' if figures['on'] else 'no'} |")
        product_table(dataset, pooled)
    (ROWS / "report.json").write_text(json.dumps(out, indent=1))
    return out


DECIDED_ON = {"number": "gsm8k report set", "notes": "notes pooled test + dev (cross-fitted flags)"}


def measured_table(out: dict) -> dict:
    """The figures skiff's allocation reads (assistant/allocation.py), for the methods it can run:
    a vote of the draft and samples (numbers from GSM8K; free text from notes, by consensus), more
    notes in context and a test-time LoRA for questions the notes answer."""
    kinds: dict = {}
    for kind, name in DECIDED_ON.items():
        for stratum in ("flagged", "not flagged"):
            entries = []
            for method, figures in out.get(name, {}).get(stratum, {}).items():
                ratio = figures["time_ratio"]
                if method.startswith("vote ") and "draft +" in method:
                    product, samples = "vote", int(method.split()[1])
                elif kind == "notes" and method in PRODUCT_METHODS:
                    product, samples = PRODUCT_METHODS[method], 1
                else:
                    continue
                entries.append({"method": product, "samples": samples, "gain": round(figures["gain"], 4),
                                "low": round(figures["gain_ci"][0], 4), "high": round(figures["gain_ci"][1], 4),
                                "time_ratio": None if ratio is None else round(ratio, 2),
                                "n": figures["n"], "pays": bool(figures["on"])})
            kinds.setdefault(kind, {})[stratum] = entries
    return kinds


def write_table(out: dict) -> Path:
    from notes_qa import resolve_model

    from skiff.assistant.allocation import table_path
    from local_plus_strata import MODEL

    path = table_path(resolve_model(MODEL).name)
    table = {"model": resolve_model(MODEL).name, "measured_by": "bench/local_plus_report.py (issue 20)",
             "rule": f"a method pays where its paired gain over greedy has a 95% interval above 0, is at least "
                     f"+{100 * MIN_GAIN:.0f} points, and it takes at most {MAX_TIME:g}× greedy's time with the draft",
             "decided_on": DECIDED_ON, "kinds": measured_table(out)}
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--greedy-cap", type=int, default=512, help="GSM8K: greedy (and the votes) at this cap")
    parser.add_argument("--temperature", type=float, default=0.7,
                        help="GSM8K votes' temperature (chosen on the tune set)")
    parser.add_argument("--notes-temperature", type=float, default=0.7)
    parser.add_argument("--write", action="store_true", help="ship the figures as the default model's table")
    args = parser.parse_args()
    out = report(args)
    if args.write:
        print(f"wrote {write_table(out)}")


if __name__ == "__main__":
    main()
