"""An answer survives the chat history's round trip (as_dict, then from_dict), which the TUI
renders from; a record an older skiff wrote, with fields missing, still renders."""

from __future__ import annotations

from skiff.assistant.answer import Answer, Source
from skiff.router.policy import Decision


def test_an_answer_round_trips_through_its_record():
    answer = Answer("a1", "How do I link?", "Use [[Note]] [1].",
                    Decision("local+", "hard", {"sigma2": 0.4}, overridden=True, router_route="local", difficulty=0.7),
                    [Source(1, "/n/Links.md", "Links", "Wikilinks", 3, 9, None, 0.81, private=True)],
                    {"first_token_s": 0.5, "total_s": 2.0}, {"prompt": 300, "completion": 40}, "eos", "m.gguf",
                    ["a notice"], "local", None, False, "p1", {"kind": "vote"}, {"abstained": False})
    assert Answer.from_dict(answer.as_dict()) == answer


def test_an_old_record_with_fields_missing_still_reads():
    old = Answer.from_dict({"id": "a2", "route": "cloud", "answer": "Hi", "sources": [{"number": 1, "path": "/n.md"}]})
    assert (old.route, old.answered_by, old.text, old.sources[0].line_start) == ("cloud", "cloud", "Hi", 1)
    assert not old.abstained and old.notices == []
