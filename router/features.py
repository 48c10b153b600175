"""What the competence surrogate sees of a question: φ(x) = [embedding, cheap text features,
note coverage, 1].

The text features carry difficulty that a sentence embedding averages away: how long the question
is, how many quantities it juggles, whether it is multiple choice. They are standardised with the
means and spreads of the data the prior was fitted on (kept with the prior), so their weights
share one scale with the embedding's.

Note coverage enters as (1 − σ²): 0 when no note covers the question, which is the case for every
question in the public routing data, so the prior leaves its weight at the value chosen below and
the person's feedback moves it.
"""

from __future__ import annotations

import math
import re

import numpy as np

NUMBER = re.compile(r"(?<![\w.])[-+]?\$?\d[\d,]*(?:\.\d+)?%?")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_OPTION = re.compile(r"^\s*[A-H][.)]\s", re.MULTILINE)
_MATH = re.compile(r"[=+*/^<>√∑∫π×÷]|\\frac|\\sqrt")
_CODE = re.compile(r"```|\bdef |\breturn\b|;\s*$|\{\s*$", re.MULTILINE)
_OPTION_TEXT = re.compile(r"^\s*[A-H][.)]\s*(.*)$", re.MULTILINE)
_NUMERIC_OPTION = re.compile(r"[-$\d.,/%\s()a-z^*+=]*\d[-$\d.,/%\s()a-z^*+=]*")
_NEGATED = re.compile(r"\b(NOT|EXCEPT|LEAST|FALSE|INCORRECT)\b")
_ABOVE = re.compile(r"\b(all|none|both) of the above\b", re.IGNORECASE)
_OF_THE_FOLLOWING = re.compile(r"\b(which|what) of the following\b", re.IGNORECASE)

TEXT_CLIP = 3.0
TEXT_FEATURES = (
    "log_chars",
    "log_words",
    "log_numbers",
    "max_number_digits",
    "log_sentences",
    "digit_share",
    "options",
    "log_option_chars",
    "math_symbols",
    "questions",
    "code",
    "mean_word_length",
    # Multiple-choice shape: what makes an exam question hard is often in its options.
    "negated_stem",
    "paired_statements",
    "numeric_option_share",
    "of_the_above",
    "log_option_length_spread",
    "log_mean_option_length",
    "of_the_following",
    "blank",
)


def text_features(text: str) -> np.ndarray:
    words = text.split()
    numbers = NUMBER.findall(text)
    options = _OPTION.findall(text)
    option_chars = 0
    if options:
        first = _OPTION.search(text)
        option_chars = len(text) - first.start() if first else 0
    digits = sum(ch.isdigit() for ch in text)
    values = [
        math.log1p(len(text)),
        math.log1p(len(words)),
        math.log1p(len(numbers)),
        max((sum(ch.isdigit() for ch in n) for n in numbers), default=0),
        math.log1p(len(_SENTENCE_END.findall(text))),
        digits / max(1, len(text)),
        float(len(options)),
        math.log1p(option_chars),
        math.log1p(len(_MATH.findall(text))),
        float(text.count("?")),
        1.0 if _CODE.search(text) else 0.0,
        sum(len(w) for w in words) / max(1, len(words)),
        *_choice_features(text),
    ]
    return np.asarray(values, dtype=np.float64)


def _choice_features(text: str) -> list[float]:
    options = [o.strip() for o in _OPTION_TEXT.findall(text)]
    lengths = [len(o) for o in options] or [0]
    numeric = sum(bool(_NUMERIC_OPTION.fullmatch(o)) for o in options) / max(1, len(options))
    return [
        1.0 if _NEGATED.search(text) else 0.0,
        1.0 if "Statement 1" in text else 0.0,
        numeric,
        1.0 if _ABOVE.search(text) else 0.0,
        math.log1p(float(np.std(lengths))),
        math.log1p(float(np.mean(lengths))),
        1.0 if _OF_THE_FOLLOWING.search(text) else 0.0,
        1.0 if "___" in text or " _ " in text else 0.0,
    ]


class FeatureMap:
    """Builds φ(x). Its standardisation comes from the prior's training data."""

    def __init__(self, text_mean: np.ndarray, text_scale: np.ndarray, embedding_dim: int = 384) -> None:
        self.text_mean = np.asarray(text_mean, dtype=np.float64)
        self.text_scale = np.asarray(text_scale, dtype=np.float64)
        self.embedding_dim = embedding_dim

    @classmethod
    def fitted(cls, texts: list[str], embedding_dim: int = 384) -> "FeatureMap":
        raw = np.stack([text_features(t) for t in texts])
        scale = raw.std(axis=0)
        return cls(raw.mean(axis=0), np.where(scale > 1e-9, scale, 1.0), embedding_dim)

    @property
    def dim(self) -> int:
        return self.embedding_dim + len(TEXT_FEATURES) + 2

    @property
    def coverage_index(self) -> int:
        return self.embedding_dim + len(TEXT_FEATURES)

    def __call__(self, text: str, embedding: np.ndarray, sigma2: float = 1.0) -> np.ndarray:
        return self.many([text], np.asarray(embedding)[None, :], np.asarray([sigma2]))[0]

    def many(self, texts: list[str], embeddings: np.ndarray, sigma2: np.ndarray | None = None) -> np.ndarray:
        raw = np.stack([text_features(t) for t in texts]) if texts else np.zeros((0, len(TEXT_FEATURES)))
        # Clipped: a one-word "hello" sits many spreads below the benchmark questions' length, and
        # an unclipped feature there would let a linear model extrapolate wildly.
        standardised = np.clip((raw - self.text_mean) / self.text_scale, -TEXT_CLIP, TEXT_CLIP)
        coverage = 1.0 - (np.ones(len(texts)) if sigma2 is None else np.asarray(sigma2, dtype=np.float64))
        return np.hstack([np.asarray(embeddings, dtype=np.float64), standardised,
                          coverage[:, None], np.ones((len(texts), 1))])

    def as_meta(self) -> dict:
        return {"text_mean": self.text_mean.tolist(), "text_scale": self.text_scale.tolist(),
                "embedding_dim": self.embedding_dim, "text_features": list(TEXT_FEATURES)}

    @classmethod
    def from_meta(cls, meta: dict) -> "FeatureMap":
        if list(meta.get("text_features", [])) != list(TEXT_FEATURES):
            raise ValueError("the surrogate was fitted with other text features; refit the prior")
        return cls(np.asarray(meta["text_mean"]), np.asarray(meta["text_scale"]), int(meta["embedding_dim"]))
