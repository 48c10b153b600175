"""Text from a cloud server, a note or a file name reaches the terminal inert: its control
sequences (clear the screen, retitle the window, set the clipboard with OSC 52, bidi overrides)
are gone from everything skiff prints, in the CLI and in the real TUI under tmux, while --json
keeps the text exact (escaped)."""

from __future__ import annotations

import json
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import SKIFF, run_skiff
from servers import FaultServer, event
from skiff.app.terminal_text import terminal_safe, terminal_safe_json

# Everything a terminal would act on: C0 but newline and tab, DEL, C1, bidi controls.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
TITLE = "\x1b]0;pwned-title\x1b\\"  # ended by ST; HOSTILE's OSC 0 ends with BEL
CLIPBOARD = "\x1b]52;c;cHduZWQtY2xpcA==\x1b\\"  # "pwned-clip"
HOSTILE = f"\x1b]2;pwned-title\x07{CLIPBOARD}\x1b[2J\x1b[H\x9b31m\u202eevil\r\x08"
# Markup in a name or heading is text: rich or Textual parsing it would hide it, or make a link.
NAME = "Boathouse [red] [$x] [B].md"
HEADING = "Boathouse [link=https://evil.example]door[/link] [/] end\\"


@given(st.text())
def test_terminal_safe_leaves_nothing_a_terminal_acts_on(text):
    safe = terminal_safe(text)
    assert not UNSAFE.search(safe)
    assert terminal_safe(safe) == safe
    if not UNSAFE.search(text):
        assert safe == text  # ordinary text, newlines and tabs included, is untouched


@given(st.text())
def test_json_output_keeps_the_text_exact_and_inert(text):
    written = terminal_safe_json({"answer": text})
    assert not UNSAFE.search(written.replace("\n", " "))
    assert json.loads(written) == {"answer": text}


def test_whole_sequences_go_not_just_their_escape():
    assert terminal_safe(f"a{TITLE}b\x1b[2Jc{CLIPBOARD}d\x1b[38;5;196me\x9b31mf") == "abcdef"


@pytest.fixture
def hostile_world(skiff_home, tmp_path):
    """A note whose name and text carry control sequences, indexed; a cloud endpoint whose stream
    carries them too, then breaks off with an error whose message carries them."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / NAME.replace("[red]", f"{TITLE}[red]")).write_text(
        f"# {HEADING}\n\nThe boathouse door code is 7319.{HOSTILE}\n", encoding="utf-8")
    server = FaultServer()
    server.fuzz_body = [event("The code ").encode(), event(f"is 7319.{HOSTILE}").encode(),
                        ("data: " + json.dumps({"error": {"message": f"overloaded{HOSTILE}"}}) + "\n\n").encode()]
    env = {**os.environ, "SKIFF_CLOUD_BASE_URL": server.url("fuzz"), "SKIFF_CLOUD_MODEL": "fault-model",
           "SKIFF_CLOUD_API_KEY": "sk-terminal-test", "SKIFF_MAX_TOKENS": "16"}
    summary = json.loads(run_skiff("index", str(notes), "--json", env=env).stdout)
    assert summary["indexed"] == 1, summary  # the hostile note is indexed, not skipped
    yield env
    server.stop()


def test_the_cli_prints_hostile_text_inert(hostile_world):
    cloud = run_skiff("ask", "--route", "cloud", "What is the boathouse door code?", env=hostile_world)
    assert "The code is 7319." in cloud.stdout  # the text around the sequences is kept
    assert "overloaded" in cloud.stderr  # the server's error is said
    local = run_skiff("ask", "--route", "local", "What is the boathouse door code?", env=hostile_world)
    assert f"{NAME} › {HEADING} (line" in local.stdout  # the source's name and section, brackets as text
    for printed in (cloud.stdout, cloud.stderr, local.stdout, local.stderr):
        assert not UNSAFE.search(printed), repr(UNSAFE.search(printed))

    exact = json.loads(run_skiff("ask", "--json", "--route", "cloud", "What is the code?", env=hostile_world).stdout)
    assert exact["answer"].startswith(f"The code is 7319.{HOSTILE}")  # the data stay exact


def test_the_tui_in_a_real_terminal_shows_hostile_text_inert(hostile_world):
    """tmux interprets what skiff writes, as a person's terminal would: an OSC 0 let through
    retitles the pane and an OSC 52 fills a paste buffer (set-clipboard on)."""
    from tmux import TmuxSession

    env = {name: hostile_world[name] for name in hostile_world if name.startswith("SKIFF_")}
    with TmuxSession(str(SKIFF), env) as tui:
        tui.option("set-clipboard", "on")
        title = tui.title()
        tui.wait_screen("ready")
        tui.type("What is the boathouse door code?")
        tui.press("Enter")
        tui.wait_screen(" tok")
        tui.type("/cloud")
        tui.press("Enter")
        tui.wait_screen("The code is 7319.evil")
        # The sources under the answers; the chat column wraps at spaces, so read it as one line.
        flat = " ".join(line.split("│", 1)[-1].strip() for line in tui.screen().splitlines())
        assert NAME in flat and HEADING in flat, tui.screens[-1]
        tui.type("/open 1")  # the hostile note itself, in the source panel
        tui.press("Enter")
        tui.wait_screen("(e edit, Esc")
        assert tui.title() == title and "pwned" not in tui.title()
        assert "pwned" not in tui.buffers() and tui.buffers().strip() == ""
        tui.press("Escape")
        tui.quit_with("C-q")
