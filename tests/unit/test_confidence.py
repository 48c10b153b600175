"""The model's confidence in each token it wrote (local/llm.py TokenConfidence), by hand."""

from __future__ import annotations

import math

import numpy as np

from skiff.local.llm import TokenConfidence


def test_log_probability_and_entropy_by_hand():
    confidence = TokenConfidence()
    confidence.add(np.log(np.array([0.5, 0.25, 0.25])) + 7.0, token=1, piece=" sail")  # logits: any shift
    assert math.isclose(confidence.logprobs[0], math.log(0.25), abs_tol=1e-9)
    assert math.isclose(confidence.entropies[0], -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)), abs_tol=1e-9)
    confidence.add(np.array([1000.0, 0.0, 0.0]), token=0, piece="!")  # a sure token, no overflow
    assert confidence.logprobs[1] == 0.0 and confidence.entropies[1] < 1e-12
    assert confidence.pieces == [" sail", "!"]
