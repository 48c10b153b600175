"""Text for an answer's badge, its sources and its decision record (plain functions, no widgets)."""

from __future__ import annotations

import json

from rich.markup import escape as escape_markup

from skiff.app.render import STAGE_LABELS, allocation_line
from skiff.app.terminal_text import terminal_safe

__all__ = ["STAGE_LABELS", "badge", "details", "shown", "sources"]


def shown(text: str) -> str:
    """Text from a note, the model or a server, made inert inside Textual markup: its brackets are
    text and its control characters are gone."""
    return escape_markup(terminal_safe(text))


def badge(answer: dict, status: str) -> str:
    """One line: who answered, the difficulty signals, latency, tokens, cost and how it ended."""
    decision = answer.get("decision", {})
    signals = decision.get("signals", {})
    by = answer.get("answered_by") or answer.get("route", "?")
    route = answer.get("route", by)
    parts = [f"[b]{by}[/b]" + (f" (router: {route})" if route != by else "")]
    if decision.get("overridden"):
        parts[0] += " · override"
    if signals.get("sigma2") is not None:
        parts.append(f"σ² {signals['sigma2']:.2f}")
    if signals.get("gain_mean") is not None:
        parts.append(f"gain {signals['gain_mean']:+.2f} ± {signals.get('gain_std', 0):.2f}")
    allocation = answer.get("allocation") or {}
    if allocation.get("vote"):
        vote = allocation["vote"]
        parts.append(f"vote {vote['count']}/{vote['samples']}")
    elif allocation.get("training"):
        parts.append(f"LoRA {allocation['training']['steps']} steps")
    timings = answer.get("timings", {})
    if timings.get("first_token_s") is not None:
        parts.append(f"{timings['first_token_s']:.1f}s → {timings.get('total_s', 0):.1f}s")
    tokens = answer.get("tokens", {})
    if tokens:
        parts.append(f"{tokens.get('completion', 0)} tok" + ("≈" if tokens.get("estimated") else ""))
    if answer.get("cost_usd"):
        parts.append(f"${answer['cost_usd']:.4f}")
    if status == "cancelled":
        parts.append("[yellow]cancelled[/]")
    elif status == "failed":
        parts.append("[red]failed[/]")
    return " · ".join(parts)


def sources(answer: dict) -> str:
    lines = []
    for source in answer.get("sources", []):
        where = f" › {shown(source['section'])}" if source.get("section") else ""
        lines.append(f"[cyan][{source['number']}][/] {shown(source['path'])}{where} [dim](line {source['line_start']})[/]")
    return "\n".join(lines)


def details(answer: dict, record: dict | None) -> str:
    """The full decision record: reason, signals and thresholds, notices, what was sent where."""
    decision = answer.get("decision", {})
    lines = [f"[b]reason[/] {shown(decision.get('reason', ''))}"]
    signals = decision.get("signals", {})
    if signals:
        lines.append("[b]signals[/] " + shown(", ".join(f"{k} {v}" for k, v in signals.items())))
    if answer.get("allocation"):
        lines.append(f"[b]local+[/] {shown(allocation_line(answer['allocation']))}")
    for notice in answer.get("notices", []):
        lines.append(f"[yellow]note[/] {shown(notice)}")
    sent = (record or {}).get("sent")
    if sent:
        withheld = sent.get("private_notes_withheld", 0)
        lines.append(f"[b]sent to[/] {shown(sent['endpoint'])} ({shown(sent['model'])}): "
                     f"{len(sent['messages'])} messages, notes {shown(json.dumps(sent['notes']))}"
                     + (f", {withheld} private chunk(s) withheld" if withheld else ""))
    else:
        lines.append("[b]sent[/] nothing left this machine")
    lines.append(f"[dim]answer id {answer.get('id', '?')}[/]")
    return "\n".join(lines)
