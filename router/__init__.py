"""skiff.router: where a question is answered, and how that choice learns.

The decision seam (policy.py: a question with its retrieved notes in, a route and its reasons
out), the uncertainty router behind it (a Bayesian linear surrogate over question features and
the notes' coverage σ², with a prior fitted on public routing data), its persisted posterior
(state.py), what it learns from (records.py, feedback.py) and the calibration of its thresholds
(calibration.py). Offline evaluation and the fitting of the shipped prior are in
skiff.router.research, which the runtime never imports.
"""

from importlib import import_module

_HOMES = {
    "AlwaysLocal": "skiff.router.policy",
    "Decision": "skiff.router.policy",
    "RoutePolicy": "skiff.router.policy",
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'skiff.router' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
