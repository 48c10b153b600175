"""What a local model's finished (or half-written) draft says about whether it is right: the
post-draft signals of the cascade, read from the model's own token confidence and the draft's
text, at no extra model call.

Every signal is oriented so that higher means "more likely wrong":
- the tokens' log-probabilities: their mean, their minimum, and the mean over the span that
  states the final answer (after "####", else the last number, else the first sentence);
- the entropy of the distributions the tokens were drawn from: mean and maximum;
- early exit: the mean log-probability and entropy over the first 16 and 32 tokens, so a check
  can run before the draft is done;
- the draft's length; refusal words;
- with notes: whether it cites none of its sources, and the share of its content words that
  none of the chunks it was given contains.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Sequence

import numpy as np

REFUSAL = re.compile(r"(?i)\b(not (mentioned|provided|specified|stated)|no information|i don't know|cannot "
                     r"(find|determine|answer)|does not (say|mention|contain)|unable to)\b")
CITATION = re.compile(r"\[\d{1,2}\]")
_WORD = re.compile(r"[^\W_]+")
_STOPWORDS = frozenset("the a an and or of to in on for with is are be it this that you your can by as at from".split())
EARLY = (16, 32)


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def answer_span(pieces: Sequence[str], logprobs: Sequence[float]) -> list[float]:
    """The log-probabilities of the tokens that state the final answer: after the last "####",
    else the draft's last number, else its first sentence."""
    text, starts = "", []
    for piece in pieces:
        starts.append(len(text))
        text += piece
    marker = text.rfind("####")
    if marker >= 0:
        begin, end = marker, len(text)
    else:
        numbers = list(re.finditer(r"-?\d[\d,]*(?:\.\d+)?", text))
        if numbers:
            begin, end = numbers[-1].start(), numbers[-1].end()
        else:
            first = re.search(r"[.!?](\s|$)", text)
            begin, end = 0, first.start() + 1 if first else len(text)
    span = [lp for start, piece, lp in zip(starts, pieces, logprobs) if start < end and start + len(piece) > begin]
    return span or list(logprobs) or [0.0]


def unsupported_share(response: str, chunks: Sequence[str]) -> float:
    """The share of the draft's content words that none of the chunks it was given contains."""
    known = set(words(" ".join(chunks)))
    content = [word for word in words(response) if word not in _STOPWORDS and len(word) > 2]
    return sum(word not in known for word in content) / len(content) if content else 1.0


def draft_signals(response: str, logprobs: Sequence[float], entropies: Sequence[float], pieces: Sequence[str],
                  chunks: Sequence[str] | None = None) -> dict[str, float]:
    """The post-draft signals, by name, in a fixed order (see the module's docstring)."""
    logprobs_ = np.asarray(logprobs if len(logprobs) else [0.0], dtype=np.float64)
    entropies_ = np.asarray(entropies if len(entropies) else [0.0], dtype=np.float64)
    signals = {
        "-mean logprob": -float(logprobs_.mean()),
        "-min logprob": -float(logprobs_.min()),
        "-answer span logprob": -float(np.mean(answer_span(pieces, logprobs))),
        "mean entropy": float(entropies_.mean()),
        "max entropy": float(entropies_.max()),
        "log length": math.log1p(len(logprobs)),
        "refusal words": float(bool(REFUSAL.search(response))),
    }
    for first in EARLY:
        signals[f"-mean logprob, first {first}"] = -float(logprobs_[:first].mean())
        signals[f"mean entropy, first {first}"] = float(entropies_[:first].mean())
    if chunks is not None:
        signals["cites no source"] = float(not CITATION.search(response))
        signals["content not in its chunks"] = unsupported_share(response, chunks)
    return signals
