"""Checks the notes question set: every reference string occurs in its gold note (normalised as
the grader normalises), no reference is given away by its question, gold sections are headings,
ids are unique, and the set has the size and spread it promises.

    .venv/bin/python bench/check_notes_qa.py [bench/data/notes_qa_dev.jsonl]

Exit status 1 and one line per problem when something is wrong.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import VAULT  # noqa: E402
from qa_grading import QAItem, problems  # noqa: E402

DEV_SET = Path(__file__).parent / "data" / "notes_qa_dev.jsonl"
NOTES = VAULT / "en"
MIN_QUESTIONS, MIN_NOTES, MIN_UNANSWERABLE = 200, 100, 25


def load(path: Path = DEV_SET) -> list[QAItem]:
    return [
        QAItem.from_dict(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def check(items: list[QAItem], notes: Path = NOTES) -> list[str]:
    found: list[str] = []
    for item in items:
        gold = notes / item.gold_file if item.gold_file else None
        text = gold.read_text(encoding="utf-8") if gold is not None and gold.is_file() else None
        found += [f"{item.id}: {problem}" for problem in problems(item, text)]
    ids = Counter(item.id for item in items)
    found += [f"{i}: the id is used {n} times" for i, n in ids.items() if n > 1]
    questions = Counter(item.question.strip().lower() for item in items)
    found += [f"the question {q!r} is asked {n} times" for q, n in questions.items() if n > 1]
    found += [f"{item.id}: split {item.split!r} is neither dev nor test" for item in items
              if item.split not in ("dev", "test")]
    notes_covered = {item.gold_file for item in items if item.gold_file}
    unanswerable = sum(not item.answerable for item in items)
    if len(items) < MIN_QUESTIONS:
        found.append(f"{len(items)} questions, fewer than {MIN_QUESTIONS}")
    if len(notes_covered) < MIN_NOTES:
        found.append(f"{len(notes_covered)} notes have questions, fewer than {MIN_NOTES}")
    if unanswerable < MIN_UNANSWERABLE:
        found.append(f"{unanswerable} unanswerable questions, fewer than {MIN_UNANSWERABLE}")
    return found


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEV_SET
    items = load(path)
    found = check(items)
    for problem in found:
        print(problem)
    kinds = Counter(item.kind for item in items)
    splits = Counter(item.split for item in items)
    notes = len({item.gold_file for item in items if item.gold_file})
    print(f"{len(items)} questions over {notes} notes; kinds {dict(kinds)}; splits {dict(splits)}; "
          f"{'OK' if not found else f'{len(found)} problem(s)'}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
