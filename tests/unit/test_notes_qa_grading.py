"""The notes benchmark's grader (bench/qa_grading.py) on hand-made cases, and the committed question
set against its own checker (every reference string really is in its gold note)."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO, VAULT

sys.path.insert(0, str(REPO / "bench"))

from qa_grading import QAItem, abstains, contains, gold_in, grade, normalise, problems, reciprocal_rank  # noqa: E402

VAULT_EN = VAULT


def item(kind="lookup", references=("Ctrl+Shift+F",), references_2=(), gold="Plugins/Search.md"):
    return QAItem("q1", "Which keys open search?", kind, tuple(references), tuple(references_2),
                  gold if kind != "unanswerable" else None, None, "dev")


@pytest.mark.parametrize("text, expected", [
    ("Press `Ctrl` + `Shift` + `F`.", "press ctrl shift f"),
    ("Up to 5GB per file", "up to 5 gb per file"),
    ("Ｆｕｌｌｗｉｄｔｈ  TEXT", "fullwidth text"),
    ("**private: true**", "private true"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize("answer, reference, expected", [
    ("Press Ctrl+Shift+F to search.", "Ctrl+Shift+F", True),
    ("press ctrl - shift - f", "Ctrl+Shift+F", True),
    ("The limit is 5 GB.", "5GB", True),
    ("Open the table view.", "tab", False),  # whole tokens only
    ("It is 1100 MB.", "100 MB", False),
    ("Use Ctrl+Shift", "Ctrl+Shift+F", False),
    ("anything", "", False),  # an empty reference never matches
])
def test_contains(answer, reference, expected):
    assert contains(answer, reference) is expected


@pytest.mark.parametrize("answer, expected", [
    ("My notes don't say. In general, Obsidian has no such feature.", True),
    ("My notes don’t say.", True),  # a typographic apostrophe
    ("The provided notes do not mention a Docker image.", True),
    ("I couldn't find that in your notes.", True),
    ("Use Ctrl+Shift+F [1].", False),
    ("Open Settings. If that doesn't work, the notes do not say more.\nMore text", False),  # not the opening
])
def test_abstains(answer, expected):
    assert abstains(answer) is expected


def test_grade_answerable_needs_the_reference_and_no_abstention():
    question = item()
    assert grade(question, "Press Ctrl+Shift+F [1].").right
    assert not grade(question, "Press Ctrl+F.").right
    abstained = grade(question, "My notes don't say. In general, Ctrl+Shift+F.")
    assert abstained.abstained and abstained.mentions and not abstained.right


def test_grade_two_facts_needs_both():
    question = item("twofact", ("Ctrl+Shift+I",), ("Command+Option+I",))
    assert grade(question, "Ctrl+Shift+I on Windows, Command+Option+I on macOS").right
    assert not grade(question, "Ctrl+Shift+I on Windows").right


def test_grade_unanswerable_is_right_only_when_it_abstains():
    question = item("unanswerable", ())
    assert grade(question, "My notes don't say. Generally, no.").right
    assert not grade(question, "Yes, open Settings > Docker.").right


def test_gold_note_and_reciprocal_rank():
    question = item()
    assert gold_in(question, ["/home/me/vault/en/Plugins/Search.md"])
    assert not gold_in(question, ["/home/me/vault/en/Plugins/Research.md"])  # a suffix, not a whole name
    assert reciprocal_rank(question, ["/v/a.md", "/v/Plugins/Search.md", "/v/Plugins/Search.md"]) == 0.5
    assert reciprocal_rank(question, ["/v/a.md"]) == 0.0


def test_problems_catch_a_reference_not_in_the_note_or_given_away():
    text = "# Search\n\nOpen it with `Ctrl+Shift+F`.\n"
    assert problems(item(), text) == []
    assert any("does not occur" in p for p in problems(item(references=("Ctrl+K",)), text))
    given_away = QAItem("q2", "What does Ctrl+Shift+F do?", "lookup", ("Ctrl+Shift+F",), (), "x.md", None, "dev")
    assert any("in the question" in p for p in problems(given_away, text))
    assert any("not a heading" in p for p in problems(
        QAItem("q3", "Keys?", "lookup", ("Ctrl+Shift+F",), (), "x.md", "Nope", "dev"), text))


@pytest.mark.skipif(not VAULT_EN.is_dir(), reason="../shared/data/notes is not beside the repository")
def test_the_committed_question_set_passes_its_checker():
    from check_notes_qa import check, load

    items = load()
    assert check(items, VAULT_EN) == []
    assert sum(i.split == "test" for i in items) >= len(items) // 3 - 2
