"""What a local model's own draft says about whether it is right: the features of the cascade row
in `skiff router eval` (a router that sees the weak model's answer before deciding)."""

from __future__ import annotations

import math
import re

import numpy as np

from skiff.router.features import NUMBER

_EQUATION = re.compile(r"(-?\d[\d,]*\.?\d*)\s*([-+*/x×])\s*(-?\d[\d,]*\.?\d*)\s*=\s*\$?(-?\d[\d,]*\.?\d*)")
_FINAL_MARKER = re.compile(r"(?i)(answer is|final answer|####|\\boxed)")
_SECOND_THOUGHTS = re.compile(r"(?i)(however|but wait|let me|re-?calculat|mistake|assum)")
_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
               "x": lambda a, b: a * b, "×": lambda a, b: a * b, "/": lambda a, b: a / b if b else math.nan}

DRAFT_FEATURES = ("log_length", "log_equations", "wrong_equations", "any_wrong_equation", "log_numbers",
                  "final_answer_marker", "second_thoughts")


def draft_features(draft: str) -> np.ndarray:
    """What a local model's own answer says about whether it is right: does it show its working,
    is its arithmetic right, does it commit to a final answer, does it hedge."""
    equations = _EQUATION.findall(draft)
    wrong = 0
    for left, op, right, result in equations:
        try:
            value = _OPERATIONS[op](float(left.replace(",", "")), float(right.replace(",", "")))
            if not math.isclose(value, float(result.replace(",", "")), rel_tol=1e-3, abs_tol=1e-2):
                wrong += 1
        except ValueError:
            continue
    return np.asarray([
        math.log1p(len(draft)),
        math.log1p(len(equations)),
        float(wrong),
        1.0 if wrong else 0.0,
        math.log1p(len(NUMBER.findall(draft))),
        1.0 if _FINAL_MARKER.search(draft) else 0.0,
        1.0 if _SECOND_THOUGHTS.search(draft) else 0.0,
    ], dtype=np.float64)
