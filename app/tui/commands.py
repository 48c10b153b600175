"""The TUI's slash commands and command-palette entries, as text and as a table: the app carries
them out (app/tui/slash_commands.py), this module only says what exists."""

from __future__ import annotations

from textual.app import SystemCommand

HELP = """[b]Commands[/b]
/local, /cloud   ask the last question again on that model (the two answers form a pair)
/local+          ask it again with more local compute (a vote over samples, or a LoRA trained on your notes)
/good, /bad      judge the latest answer (the router learns from it)
/offline         toggle offline mode (nothing leaves the machine)
/index [PATH]    index a folder of notes (no PATH: re-index the indexed folders); Esc stops
/watch           re-index indexed folders as files change
/tune            train (or resume) the personal adapter on all your notes; Esc stops, /tune resumes
/new             a new chat        /rename TITLE   rename this chat     /delete   delete this chat
/open N          show source [N] of the latest answer (e there opens $EDITOR)      /help   this text
/model [NAME]    list the local models, or answer with NAME from now on
/export [md|json] [PATH]   save this chat (questions, answers, who answered, sources) as Markdown or JSON
[b]Keys[/b] Enter send · ctrl+j newline · Esc cancel · ctrl+g good · ctrl+b bad · ctrl+o decision · ctrl+n new chat
shift+tab moves to the messages; on a message: l/c/+ ask again locally/in the cloud/with more local compute,
g/b judge, o decision,
1-9 show a source, y copy, k copy the next code block, up/down move, i back to typing"""

# (title, help, the slash command it runs)
PALETTE = [
    ("New chat", "Start a new conversation", "/new"),
    ("Answer was good", "Tell the router the latest answer was good", "/good"),
    ("Answer was bad", "Tell the router the latest answer was bad", "/bad"),
    ("Ask again locally", "Resend the last question to the local model", "/local"),
    ("Ask again in the cloud", "Resend the last question to the cloud endpoint", "/cloud"),
    ("Ask again with more local compute", "A vote over samples, or a LoRA trained on your notes", "/local+"),
    ("Show the decision", "Why the latest answer came from where it came", "/details"),
    ("Re-index notes", "Index the indexed folders again (only changed files are read)", "/index"),
    ("Train the personal adapter", "A LoRA over all your notes, under every answer until they change", "/tune"),
    ("Toggle offline mode", "Keep every question on this machine, or not", "/offline"),
    ("Watch notes folders", "Re-index indexed folders as their files change (toggle)", "/watch"),
    ("Local models", "The installable local models, and which one answers (/model NAME switches)", "/model"),
    ("Export this chat", "As Markdown in the folder skiff started from (/export json PATH for JSON)", "/export"),
    ("skiff help", "Keys and slash commands", "/help"),
]


def palette_commands(run_command):
    """SystemCommands for Textual's palette (ctrl+p); `run_command` takes the slash command."""
    for title, help_text, command in PALETTE:
        yield SystemCommand(title, help_text, lambda command=command: run_command(command))
