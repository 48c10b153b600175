"""Query rewriting by the local model, measured on the notes question set (issue: right answers).

Before retrieval, the default model rewrites the question, two ways:
- keywords: the question as a search query in the documentation's own words;
- passage: a short passage that would answer it (HyDE, Gao et al., arXiv 2212.10496), whose
  vector lands nearer the notes than the question's.
Each is retrieved alone, appended to the question, and fused with the question's own candidates
(reciprocal rank fusion), beside the shipped retrieval (the question alone, hybrid, k 5).
Reported: the gold note in the k chunks, the answer's words in them, and what the rewrite costs
(median seconds of generation on this machine). Rewrites are rows on disk; the command resumes.

    .venv/bin/python bench/query_rewrite.py --split dev
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from check_notes_qa import load  # noqa: E402
from notes_qa import (OUT, SEED, bootstrap_mean, choose, interval, open_assistant, paired_difference,  # noqa: E402
                      percent, resolve_model, retrieval_configs)
from qa_grading import gold_in, mentions_references  # noqa: E402

PROMPTS = {
    "keywords": "Rewrite this question as a short search query for the Obsidian documentation, using the words "
                "the documentation itself would use (feature, setting and menu names). Reply with the query only.",
    "passage": "Write two sentences from the Obsidian documentation that answer this question. Reply with the "
               "two sentences only.",
}
MAX_TOKENS = {"keywords": 32, "passage": 80}


def rewrite(model, style: str, question: str) -> tuple[str, float]:
    messages = [{"role": "system", "content": PROMPTS[style]}, {"role": "user", "content": question}]
    tokens = model.tokenize_prompt(model.render(messages))
    started = time.perf_counter()
    text = "".join(model.stream(tokens, max_tokens=MAX_TOKENS[style]))
    return " ".join(text.split()), time.perf_counter() - started


def gather_rewrites(items, model_name: str, path: Path) -> dict[str, dict]:
    from skiff.local.llm import LocalModel

    done = {}
    if path.exists():
        done = {row["id"]: row for row in map(json.loads, path.read_text().splitlines()) if row}
    todo = [item for item in items if item.id not in done]
    if not todo:
        return done
    model = LocalModel(resolve_model(model_name), n_ctx=2048, n_threads=2)
    with path.open("a") as sink:
        for number, item in enumerate(todo, start=1):
            row = {"id": item.id}
            for style in PROMPTS:
                row[style], row[f"{style}_s"] = rewrite(model, style, item.question)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done[item.id] = row
            print(f"\rrewrites {number}/{len(todo)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="dev", choices=["dev", "test", "all"])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    args = parser.parse_args()

    from skiff.assistant.retrieval import candidates, fuse, select

    items = [item for item in choose(load(), args.split) if item.answerable]
    rewrites = gather_rewrites(items, args.model, OUT / "notes_qa" / f"rewrites--{args.model}.jsonl")
    assistant = open_assistant()
    notes, embedder = assistant.notes, assistant.embedder
    config = retrieval_configs()["hybrid RRF top-5"]

    def pool(query: str):
        return candidates(notes, query, embedder.encode_query(query), config)

    def chosen(item, variant: str):
        question = item.question
        if variant == "question (shipped)":
            return select(embedder.encode_query(question), pool(question), config).selected
        style, how = variant.split(", ")
        text = rewrites[item.id][style]
        if how == "alone":
            return select(embedder.encode_query(text), pool(text), config).selected
        if how == "appended":
            joined = f"{question} {text}"
            return select(embedder.encode_query(joined), pool(joined), config).selected
        first, second = pool(question), pool(text)
        by_id = {hit.id: hit for hit in [*second, *first]}
        order = fuse([[hit.id for hit in first], [hit.id for hit in second]], config.rrf_k)
        return select(embedder.encode_query(question), [by_id[i] for i in order], config).selected

    variants = ["question (shipped)"] + [f"{style}, {how}" for style in PROMPTS
                                         for how in ("alone", "appended", "fused with the question")]
    rows = {}
    for variant in variants:
        found, words = [], []
        for item in items:
            hits = chosen(item, variant)
            found.append(float(gold_in(item, [hit.path for hit in hits])))
            words.append(float(mentions_references(item, "\n".join(f"{h.title} {h.section}\n{h.text}" for h in hits))))
        rows[variant] = (found, words)
    rng = random.Random(SEED)
    base_found, base_words = rows["question (shipped)"]
    seconds = {style: statistics.median(rewrites[item.id][f"{style}_s"] for item in items) for style in PROMPTS}
    print(f"\nQuery rewriting by {args.model}, {len(items)} answerable {args.split} questions, hybrid k 5; "
          "Δ paired against the question alone, 95% bootstrap\n")
    print("| query | gold note in context | Δ | answer's words in context | Δ | median rewrite s |")
    print("|---|---|---|---|---|---|")
    for variant, (found, words) in rows.items():
        low, high = bootstrap_mean(found, rng)
        d_found = paired_difference(base_found, found, rng)
        d_words = paired_difference(base_words, words, rng)
        style = variant.split(", ")[0]
        cost = f"{seconds[style]:.2f}" if style in seconds else "0"
        print(f"| {variant} | {percent(statistics.fmean(found))} {interval(low, high)} | "
              f"{100 * d_found[0]:+.1f} {interval(*d_found[1:])} | {percent(statistics.fmean(words))} | "
              f"{100 * d_words[0]:+.1f} {interval(*d_words[1:])} | {cost} |")


if __name__ == "__main__":
    main()
