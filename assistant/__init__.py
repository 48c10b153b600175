"""skiff.assistant: the answer pipeline, retrieve -> decide -> answer -> record, as a library
without a terminal:

    from skiff.assistant import Assistant
    assistant = Assistant()
    assistant.index(["~/notes"])
    answer = assistant.ask("How do I link notes?", on_token=print)

It retrieves notes, asks the router (skiff.router) where to answer, runs the attempts that
answer (the local model, more local compute, the cloud) and records the result. The names below
load on first use, so importing this package stays cheap.
"""

from importlib import import_module

_HOMES = {
    "Answer": "skiff.assistant.answer",
    "Assistant": "skiff.assistant.pipeline",
    "Source": "skiff.assistant.answer",
    "LocalBusy": "skiff.assistant.local_gate",
    "DiskFullError": "skiff.local.recovery",
    "Recovery": "skiff.local.recovery",
    "on_recovery": "skiff.local.recovery",
    "recoveries": "skiff.local.recovery",
}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'skiff.assistant' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
