"""The status line: the model (loading, ready, failed), the cloud (reachable, unreachable, offline,
not configured), the index size, and the router's cloud share and spend against the budget. The
cloud check and the router's figures are read in workers; they touch the network and SQLite."""

from __future__ import annotations

from textual import work
from textual.content import Content
from textual.widgets import Static

from skiff.app.tui.format import markup


class StatusLine(Static):
    DEFAULT_CSS = "StatusLine { height: 1; color: $text-muted; padding: 0 1; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self._shown: dict[str, Content] = {name: Content("") for name in ("model", "queue", "cloud", "index", "router")}
        self._shown["model"] = Content("model loading…")
        self.parts = {name: content.plain for name, content in self._shown.items()}  # as read on screen

    def set_part(self, name: str, text: str | Content) -> None:
        """`text`: skiff's own markup, or Content (see format.markup) where it quotes anything else."""
        self._shown[name] = text if isinstance(text, Content) else Content.from_markup(text)
        self.parts[name] = self._shown[name].plain
        self.update(Content(" │ ").join([part for part in self._shown.values() if part]))

    def show_assistant(self, assistant) -> None:
        """Cloud state and router figures, read afresh (after loading, an answer, /offline)."""
        settings = assistant.settings
        if settings.offline:
            self.set_part("cloud", "cloud: offline")
        elif settings.cloud_configured:
            self.set_part("cloud", markup("cloud: checking $model…", model=settings.cloud_model))
            self._check_cloud(assistant)
        else:
            self.set_part("cloud", "cloud: not configured")
        self.show_router_stats(assistant)

    @work(thread=True, name="cloud-check", group="cloud-check", exclusive=True, exit_on_error=False)
    def _check_cloud(self, assistant) -> None:
        check = assistant.cloud_check()
        model = assistant.settings.cloud_model
        text = (markup("cloud: $model reachable", model=model) if check["ok"]
                else markup("[yellow]cloud: unreachable[/] ($message)", message=check["message"]))
        if not assistant.settings.offline:  # offline may have been switched on meanwhile
            self.app.call_from_thread(self.set_part, "cloud", text)

    @work(thread=True, name="router-stats", group="router-stats", exclusive=True, exit_on_error=False)
    def show_router_stats(self, assistant) -> None:
        stats = assistant.router_stats()
        spend = stats["cloud_spend"]
        share = "—" if stats["cloud_share"] is None else f"{stats['cloud_share']:.0%}"
        budget = f" of ${spend['budget_usd']:.2f}" if spend.get("budget_usd") is not None else ""
        self.app.call_from_thread(self.set_part, "router", f"cloud share {share} · ${spend['usd']:.2f}{budget} spent")
