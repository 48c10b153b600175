"""The post-draft signals (router/draft_signals.py) by hand."""

from __future__ import annotations

import math

from skiff.router.draft_signals import answer_span, draft_signals, unsupported_share


def test_the_answer_span_is_what_follows_the_final_marker_or_the_last_number():
    pieces = ["3 + 4", " = 7", ". ", "####", " 7"]
    logprobs = [-0.1, -0.2, -0.3, -1.0, -2.0]
    assert answer_span(pieces, logprobs) == [-1.0, -2.0]
    assert answer_span(["It is", " 42", " eggs."], [-0.1, -0.9, -0.2]) == [-0.9]
    assert answer_span(["Use", " the", " menu.", " Then"], [-0.1, -0.2, -0.3, -0.4]) == [-0.1, -0.2, -0.3]


def test_support_counts_content_words_the_chunks_lack():
    assert unsupported_share("Turn on Sync in Settings.", ["Settings > Sync: turn it on."]) == 0.0
    assert math.isclose(unsupported_share("Press Docker twice.", ["Press the button."]), 2 / 3)


def test_signals_grow_with_doubt():
    sure = draft_signals("Press Ctrl+P [1].", [-0.01] * 8, [0.05] * 8, ["x"] * 8, ["Press Ctrl+P"])
    unsure = draft_signals("I cannot find it.", [-2.0] * 8, [3.0] * 8, ["x"] * 8, ["Press Ctrl+P"])
    for name in ("-mean logprob", "-min logprob", "mean entropy", "-mean logprob, first 16", "cites no source",
                 "content not in its chunks", "refusal words"):
        assert unsure[name] > sure[name], name
    assert list(sure) == list(unsure)  # one order, whatever the draft
    assert "cites no source" not in draft_signals("42", [-0.1], [0.1], ["42"])  # no notes, no note signals
