"""Text from notes, the model or a cloud server ends up in a terminal, where control characters
in it act: they can move the cursor, clear the screen, retitle the window, set the clipboard
(OSC 52), and bidirectional overrides make text read other than it is. Rich and Textual strip only
bell, backspace, vertical tab, form feed and carriage return, so everything skiff shows passes
through `terminal_safe` (the CLI's consoles do it for every segment they print)."""

from __future__ import annotations

import json
import re

from rich.console import Console
from rich.segment import Segment

# Whole CSI and OSC sequences go (so no "[2J" is left behind); any control character left after
# that, C0 but newline and tab, DEL, C1, and the bidi embeddings,
# overrides and isolates, goes on its own. A sequence split across streamed pieces, or an OSC whose
# BEL rich already took, loses its introducer and shows as harmless text.
_SEQUENCE = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # json.dumps escapes C0 itself


def terminal_safe(text: str) -> str:
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


def terminal_safe_json(obj) -> str:
    """JSON with every character a terminal would act on written as a \\u escape: the data stay
    exact for a program reading them, and inert on a screen."""
    return _JSON_UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}",
                            json.dumps(obj, indent=2, ensure_ascii=False))


class SafeConsole(Console):
    """A rich Console whose printed text cannot carry terminal control sequences; rich's own
    styling and cursor control (control segments, styles) are untouched."""

    def render(self, renderable, options=None):
        for segment in super().render(renderable, options):
            yield segment if segment.control else Segment(terminal_safe(segment.text), segment.style)
