"""local+ after the draft (assistant/allocation.py, assistant/attempts.py): which method a question
gets from what was measured to pay, what the person switched on or asked for; and, with scripted
parts, an unsure draft set aside for an answer with more notes, a confident one left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_cascade import CLOUD, LONG, SURE, UNSURE, assistant_with, decision_row

from skiff.assistant.allocation import Measured, allocate, measured_table, table_path

NUMBER = "How many clips did Natalia sell in April and May altogether if she sold 48 and then 24?"
NOTES = "How do I link to a heading?"


def measured(method: str, gain: float, pays: bool, ratio: float = 2.0, samples: int = 1) -> Measured:
    return Measured(method, samples, gain, gain - 0.08, gain + 0.08, ratio, 60, pays)


TABLE = {"number": {"flagged": [measured("vote", 0.10, True, 2.5, 3), measured("vote", 0.12, False, 5.0, 8)],
                    "not flagged": [measured("vote", -0.02, False, 2.5, 3)]},
         "notes": {"flagged": [measured("context", 0.15, True, 2.4), measured("lora", 0.18, False, 9.0)],
                   "not flagged": [measured("context", 0.01, False, 2.4)]}}


def test_an_unsure_draft_gets_the_method_that_pays_most_per_second():
    chosen = allocate(NUMBER, False, True, TABLE, None, False)
    assert (chosen.kind, chosen.samples) == ("vote", 3)  # the vote of 8 gains more but did not pay
    assert "+10 points" in chosen.reason and "2.5× greedy" in chosen.reason
    chosen = allocate(NOTES, True, True, TABLE, None, False)
    assert chosen.kind == "context" and "unsure drafts of notes questions" in chosen.reason


def test_where_nothing_pays_the_draft_stands_and_the_reason_names_the_best_measured():
    chosen = allocate(NOTES, True, False, TABLE, None, False)
    assert chosen.kind == "plain" and "no local+ method pays on confident drafts" in chosen.reason
    assert "more notes in context" in chosen.reason and "+1 points" in chosen.reason
    assert allocate("What is a callout?", False, True, TABLE, None, False).kind == "plain"  # general: none applies
    assert allocate(NOTES, True, True, {}, None, False).reason.endswith("(none measured); the draft stands")


def test_methods_switched_on_by_hand_are_used_even_where_they_did_not_pay():
    assert allocate(NOTES, True, True, TABLE, ["lora"], False).kind == "lora"
    assert "switched on by you" in allocate(NOTES, True, True, TABLE, ["lora"], False).reason
    assert allocate("What is a callout?", False, True, TABLE, ["vote"], False).kind == "plain"  # nothing to vote on
    free_text = allocate(NOTES, True, True, TABLE, ["vote"], False)  # by consensus; not measured here
    assert free_text.kind == "vote" and "not measured" in free_text.reason
    assert allocate(NOTES, True, True, TABLE, [], False).kind == "plain"  # none switched on
    confident = allocate(NOTES, True, False, TABLE, ["context"], False)  # switched on: for unsure drafts
    assert confident.kind == "plain" and "confident drafts" in confident.reason
    assert allocate(NOTES, True, False, TABLE, ["context"], True).kind == "context"  # unless asked for
    unmeasured = allocate(NUMBER, False, True, {}, ["vote"], False, difficulty=1.0, vote_samples=(3, 8))
    assert (unmeasured.kind, unmeasured.samples) == ("vote", 8) and "not measured" in unmeasured.reason


def test_asked_for_more_compute_the_best_measured_method_runs_even_if_it_did_not_pay():
    asked = allocate(NOTES, True, False, TABLE, None, True)
    assert asked.kind == "context" and "as you asked" in asked.reason
    assert allocate(NUMBER, False, False, {}, None, True).kind == "vote"  # never measured: a vote still
    assert allocate("What is a callout?", False, False, {}, None, True).kind == "plain"


def test_the_shipped_table_for_the_default_model_reads_and_names_its_methods():
    from skiff.assistant.model_choice import DEFAULT_MODEL
    from skiff.local.models import CATALOG

    filename = CATALOG[DEFAULT_MODEL].file_name
    path = table_path(filename)
    if not path.exists():
        pytest.skip("no measured table shipped for the default model")
    table = measured_table(filename)
    assert set(table) <= {"number", "notes", "general"} and table
    for strata in table.values():
        for entries in strata.values():
            assert all(entry.method in ("vote", "context", "lora") and entry.n > 0 for entry in entries)
    raw = json.loads(path.read_text())
    assert raw["measured_by"].startswith("bench/local_plus_report.py")


# -- with scripted parts --------------------------------------------------------------------------

def with_notes_and_candidates(assistant):
    """Every question finds a note, and two more candidates SIFT can pick for "more notes"."""
    from skiff.local.notes_index import Hit
    from skiff.router.policy import QuestionWithNotes

    def hit(n: int, text: str) -> Hit:
        vector = assistant.embedder.encode_query(text)
        return Hit(f"n{n}", text, f"/notes/Sail{n}.md", f"Sail {n}", "", 1, 1, None, False, 0.2, vector)

    found = [hit(1, "A sail is a sheet of fabric that catches the wind."),
             hit(2, "Reefing makes a sail smaller in strong wind."), hit(3, "A jib is the sail ahead of the mast.")]

    def consult(question, k=None, use_notes=True):
        return QuestionWithNotes(question, assistant.embedder.encode_query(question), found[:1], 0.3, found)

    assistant.consult_notes = consult
    return assistant


def pays_for_notes(assistant, method: str = "context"):
    assistant.local_plus_measured = lambda: {"notes": {"flagged": [measured(method, 0.2, True, 2.0)]}}
    return assistant


def test_offline_an_unsure_draft_is_set_aside_for_an_answer_with_more_notes(skiff_home, tmp_path):
    assistant = pays_for_notes(with_notes_and_candidates(
        assistant_with(tmp_path, [LONG, "A sail catches the wind [1]."], [UNSURE, SURE], offline=True, **CLOUD)))
    shown: list[str] = []
    set_aside: list[tuple[str, str]] = []
    answer = assistant.ask("What is a sail?", on_token=shown.append,
                           on_set_aside=lambda reason: set_aside.append(("".join(shown), reason)))
    assert answer.answered_by == "local" and answer.text == "A sail catches the wind [1]."
    assert answer.allocation["kind"] == "context" and answer.allocation["context"]["notes_in_prompt"] >= 2
    assert set_aside and set_aside[0][1].startswith("the local model is unsure") and "more notes" in set_aside[0][1]
    assert answer.draft and LONG.startswith(answer.draft)  # the draft stopped early, kept folded
    assert answer.draft_check["replaced_by"] == "context" and answer.draft_check["unsure"]
    assert json.loads(decision_row(answer.id)["draft_check"])["replaced_by"] == "context"
    # The prompt of the second answer holds the notes SIFT added after the retrieved one.
    assert len(assistant.model.prompts[1]) > len(assistant.model.prompts[0])


def test_a_confident_draft_is_the_answer_and_no_compute_is_spent(skiff_home, tmp_path):
    assistant = pays_for_notes(with_notes_and_candidates(assistant_with(tmp_path, [LONG], [SURE], offline=True)))
    answer = assistant.ask("What is a sail?")
    assert answer.text == LONG and answer.allocation is None and answer.draft is None
    assert not answer.draft_check["unsure"] and answer.draft_check["replaced_by"] is None


def test_sent_to_local_plus_a_draft_that_nothing_pays_for_says_why_and_escalates_when_unsure(skiff_home, tmp_path):
    from scripted import cloud_answering

    assistant = with_notes_and_candidates(
        assistant_with(tmp_path, [LONG], [UNSURE], cloud_answering(["The cloud ", "answers."]), route="local+",
                       **CLOUD))
    assistant.local_plus_measured = lambda: {}
    answer = assistant.ask("What is a sail?")
    assert answer.answered_by == "cloud" and answer.draft_check["escalated"]
    assert answer.allocation["kind"] == "plain" and "no local+ method pays" in answer.allocation["reason"]


def test_a_verdict_on_an_answer_that_replaced_its_draft_does_not_teach_the_check(skiff_home, tmp_path):
    assistant = pays_for_notes(with_notes_and_candidates(
        assistant_with(tmp_path, [LONG, "Better [1]."], [UNSURE, SURE], offline=True)))
    answer = assistant.ask("What is a sail?")
    check = assistant.draft_check()
    before = check.surrogate().mean.copy()
    assistant.feedback("bad", answer.id)
    assert np.allclose(assistant.draft_check().surrogate().mean, before)


def test_after_an_escalated_finished_draft_the_cloud_failing_leaves_it_standing(skiff_home, tmp_path):
    from scripted import cloud_answering

    # A general answer is read only when finished: its escalation has the whole draft, which stands.
    assistant = assistant_with(tmp_path, [LONG], [UNSURE], cloud_answering(None, 500), **CLOUD)
    shown: list[str] = []
    set_aside: list[str] = []
    answer = assistant.ask("What is a sail?", use_notes=False, on_token=shown.append,
                           on_set_aside=lambda reason: set_aside.append("".join(shown)))
    assert answer.answered_by == "local" and answer.text == LONG  # the model did not write it again
    assert set_aside == [LONG] and "".join(shown) == LONG + LONG  # shown again below the folded draft
    assert any("answered locally" in n for n in answer.notices) and answer.draft_check["escalated"]


def test_a_free_text_vote_picks_the_answer_most_like_the_others_and_ties_keep_the_draft():
    from skiff.assistant.voting import consensus_vote

    texts = ["Use the heading link syntax [[Note#Heading]] [1].",
             "Type [[Note#Heading]] to link to a heading [2].",
             "Link to a heading with [[Note#Heading]] in your note.",
             "Bananas are yellow."]
    vote = consensus_vote(texts)
    assert vote.chosen in (1, 2) and vote.answer == f"sample {vote.chosen}"
    assert vote.count >= 2 and vote.samples == 4 and vote.count < 4  # the odd one out does not agree
    assert consensus_vote(["A sail.", "A sail."]).chosen == 0  # a tie keeps the draft
    assert consensus_vote(["Only the draft."]).answer == "the draft"
    # Citation markers say where, not what: they do not make two answers agree.
    assert consensus_vote(["[1] [2]", "Yes [1] [2]", "No"]).count == 1


def test_among_methods_that_pay_the_most_gain_per_extra_time_wins():
    cheap, dear = measured("context", 0.10, True, 1.5), measured("vote", 0.20, True, 2.9, 8)
    table = {"notes": {"flagged": [dear, cheap]}}
    assert allocate(NOTES, True, True, table, None, False).kind == "context"  # 0.20 per extra time vs 0.11
    table = {"notes": {"flagged": [dear, measured("context", 0.10, True, 2.5)]}}
    assert allocate(NOTES, True, True, table, None, False).kind == "vote"
