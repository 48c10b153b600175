"""Notes work in the background: indexing a folder (with a progress bar over the files, Esc stops
it), training the personal adapter on them (/tune), and watching the indexed folders so edits
re-index. The bar posts `NotesBar.Indexed` with each
summary; the app shows the index size in its status line."""

from __future__ import annotations

import threading
import time

from textual import work
from textual.containers import Horizontal
from textual.message import Message as TextualMessage
from textual.widgets import Label, ProgressBar

from skiff.app.terminal_text import terminal_safe
from skiff.app.tui.format import markup


class NotesBar(Horizontal):
    DEFAULT_CSS = """
    NotesBar { height: 1; padding: 0 1; display: none; }
    NotesBar Label { width: 1fr; color: $text-muted; }
    NotesBar ProgressBar { width: auto; }
    """

    class Indexed(TextualMessage):
        def __init__(self, summary, note: str = "") -> None:
            super().__init__()
            self.summary, self.note = summary, note

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.assistant = None  # set by the app once its Assistant exists
        self.opened = threading.Event()  # ... which is when indexing may start
        self.cancel: threading.Event | None = None
        self.watch_stop: threading.Event | None = None

    def compose(self):
        yield Label("")
        yield ProgressBar(total=None, show_eta=True)

    def attach(self, assistant) -> None:
        """Called from any thread once the Assistant exists."""
        self.assistant = assistant
        self.opened.set()

    @property
    def indexing(self) -> bool:
        return self.cancel is not None

    # -- indexing ------------------------------------------------------------------------------

    def index(self, folder: str = "") -> None:
        """Index `folder`, or re-index every indexed folder when it is empty."""
        if self.cancel is not None:
            self.notify("already indexing; Esc stops it", severity="warning")
            return
        self.cancel = threading.Event()
        self.display = True
        self.query_one(Label).update(markup("indexing $folder…  (Esc stops)", folder=folder or "the indexed folders"))
        self.query_one(ProgressBar).update(total=None, progress=0)
        self._index(folder, self.cancel)

    def stop(self) -> None:
        if self.cancel is not None:
            self.cancel.set()

    @work(thread=True, name="index", exit_on_error=False)
    def _index(self, folder: str, cancel: threading.Event) -> None:
        self.opened.wait()  # indexing needs the embedder, not the chat model
        try:
            summary = self.assistant.index([folder] if folder else None,
                                           progress=lambda p: self.app.call_from_thread(self._advance, p),
                                           cancel=cancel)
        except Exception as error:  # noqa: BLE001 - e.g. a folder that does not exist: said, not raised
            self.app.call_from_thread(self.notify, terminal_safe(f"indexing failed: {error}"), severity="error",
                                      timeout=15, markup=False)
        else:
            self.post_message(self.Indexed(summary, " (stopped)" if summary.cancelled else ""))
            skipped = f", {len(summary.skipped)} skipped (`skiff index` says why)" if summary.skipped else ""
            self.app.call_from_thread(
                self.notify, f"indexed {summary.indexed} file(s), {summary.unchanged} unchanged{skipped}")
        finally:
            self.app.call_from_thread(self._ended)

    def _advance(self, progress) -> None:
        self.query_one(Label).update(markup("$done/$total files, $chunks new chunks · $current",
                                            done=progress.files_done, total=progress.files_total,
                                            chunks=progress.chunks_added, current=progress.current))
        self.query_one(ProgressBar).update(total=progress.files_total or None, progress=progress.files_done)

    def _ended(self) -> None:
        self.cancel = None
        self.display = False

    # -- the personal adapter ------------------------------------------------------------------

    def tune(self) -> None:
        """Train (or resume) the personal adapter over the whole index; Esc stops it with a
        checkpoint kept, and /tune later carries on."""
        if self.cancel is not None:
            self.notify("notes work is already running; Esc stops it", severity="warning")
            return
        self.cancel = threading.Event()
        self.display = True
        self.query_one(Label).update("training the personal adapter on your notes…  (Esc stops; /tune resumes)")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self._tune(self.cancel)

    @work(thread=True, name="tune", exit_on_error=False)
    def _tune(self, cancel: threading.Event) -> None:
        self.opened.wait()

        def progress(done: int, total: int) -> None:
            self.app.call_from_thread(self.query_one(ProgressBar).update, total=total, progress=done)

        try:
            status = self.assistant.tune(progress=progress, cancel=cancel)
        except Exception as error:  # noqa: BLE001 - e.g. nothing indexed yet: said, not raised
            self.app.call_from_thread(self.notify, terminal_safe(f"tuning failed: {error}"), severity="error",
                                      timeout=15, markup=False)
        else:
            self.app.call_from_thread(self.notify, f"personal adapter: {status.describe()}")
        finally:
            self.app.call_from_thread(self._ended)

    # -- watching ------------------------------------------------------------------------------

    def toggle_watching(self) -> None:
        if self.watch_stop is None:
            self.watch_stop = threading.Event()
            self._watch(self.watch_stop)
            self.notify("watching indexed folders: edits re-index in the background")
        else:
            self.watch_stop.set()
            self.watch_stop = None
            self.notify("stopped watching indexed folders")

    @work(thread=True, name="watch-notes", exit_on_error=False)
    def _watch(self, stop: threading.Event) -> None:
        self.opened.wait()
        self.assistant.watch_notes(
            stop, lambda summary: self.post_message(self.Indexed(summary, f" (re-indexed {time.strftime('%H:%M:%S')})"))
        )

    def on_unmount(self) -> None:
        for event in (self.cancel, self.watch_stop):
            if event is not None:
                event.set()
