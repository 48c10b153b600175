"""skiff.router: the answer pipeline (retrieve -> decide -> generate -> record), its settings and
the decision seam. Usable as a library without a terminal:

    from skiff.router import Assistant

The names below load on first use, so `skiff.router.settings` alone stays cheap to import (the
TUI reads its settings before the heavy parts of the pipeline have loaded).
"""

from importlib import import_module

_HOMES = {
    "Answer": "skiff.router.assistant",
    "Assistant": "skiff.router.assistant",
    "Source": "skiff.router.assistant",
    "AlwaysLocal": "skiff.router.policy",
    "Decision": "skiff.router.policy",
    "RoutePolicy": "skiff.router.policy",
    "DiskFullError": "skiff.local.recovery",
    "Recovery": "skiff.local.recovery",
    "on_recovery": "skiff.local.recovery",
    "recoveries": "skiff.local.recovery",
    "Settings": "skiff.router.settings",
    "load_settings": "skiff.router.settings",
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'skiff.router' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
