"""Text for an answer's badge, its sources and its decision record (plain functions, no widgets),
and `markup`, the one way text from a note, the model or a server enters Textual markup."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from textual.content import Content

from skiff.app.render import STAGE_LABELS, abstention_line, allocation_line, draft_check_line
from skiff.app.terminal_text import terminal_safe

if TYPE_CHECKING:
    from skiff.assistant.answer import Answer

__all__ = ["STAGE_LABELS", "badge", "details", "markup", "sources"]


def markup(template: str, **values) -> Content:
    """Textual markup whose $names are filled with `values` as plain text: never parsed as markup
    (escaping cannot do that: Textual reads "[$x]", "[B]" and a trailing backslash its own way),
    with every terminal control character gone."""
    return Content.from_markup(template, **{name: terminal_safe(str(value)) for name, value in values.items()})


def badge(answer: Answer, status: str) -> str:
    """One line: who answered, the difficulty signals, latency, tokens, cost and how it ended."""
    decision, signals, by = answer.decision, answer.decision.signals, answer.answered_by
    parts = [f"[b]{by}[/b]" + (f" (router: {answer.route})" if answer.route != by else "")]
    if decision.overridden:
        parts[0] += " · override"
    if signals.get("sigma2") is not None:
        parts.append(f"σ² {signals['sigma2']:.2f}")
    if signals.get("gain_mean") is not None:
        parts.append(f"gain {signals['gain_mean']:+.2f} ± {signals.get('gain_std', 0):.2f}")
    if answer.abstained:
        parts.append("[yellow]notes don't say[/]")
    check = answer.draft_check or {}
    if check.get("escalated"):
        parts.append(f"draft unsure {check['confidence']:.2f} → cloud")
    elif check.get("replaced_by"):
        parts.append(f"draft {'unsure ' if check.get('unsure') else ''}{check['confidence']:.2f} → "
                     f"{check['replaced_by']}")
    elif check.get("unsure"):
        parts.append(f"[yellow]unsure {check['confidence']:.2f}[/]")
    elif check:
        parts.append(f"sure {check['confidence']:.2f}")
    allocation = answer.allocation or {}
    if allocation.get("vote"):
        vote = allocation["vote"]
        parts.append(f"vote {vote['count']}/{vote['samples']}")
    elif allocation.get("training"):
        parts.append(f"LoRA {allocation['training']['steps']} steps")
    elif allocation.get("context"):
        parts.append(f"+{allocation['context']['notes_added']} notes")
    timings = answer.timings
    if timings.get("first_token_s") is not None:
        parts.append(f"{timings['first_token_s']:.1f}s → {timings.get('total_s') or 0:.1f}s")
    if answer.tokens:
        parts.append(f"{answer.tokens.get('completion', 0)} tok" + ("≈" if answer.tokens.get("estimated") else ""))
    if answer.cost_usd:
        parts.append(f"${answer.cost_usd:.4f}")
    if status == "cancelled":
        parts.append("[yellow]cancelled[/]")
    elif status == "failed":
        parts.append("[red]failed[/]")
    return " · ".join(parts)


def sources(answer: Answer) -> Content:
    lines = []
    for source in answer.sources:
        where = f" › {source.section}" if source.section else ""
        lines.append(markup("[cyan]\\[$number][/] $path$where [dim](line $line)[/]", number=source.number,
                            path=source.path, where=where, line=source.line_start))
    return Content("\n").join(lines)


def details(answer: Answer, record: dict | None) -> Content:
    """The full decision record: reason, signals and thresholds, notices, what was sent where."""
    lines = [markup("[b]reason[/] $reason", reason=answer.decision.reason)]
    signals = answer.decision.signals
    if signals:
        lines.append(markup("[b]signals[/] $signals", signals=", ".join(f"{k} {v}" for k, v in signals.items())))
    if answer.allocation:
        lines.append(markup("[b]local+[/] $allocation", allocation=allocation_line(answer.allocation)))
    if answer.abstention:
        lines.append(markup("[b]notes check[/] $check", check=abstention_line(answer.abstention)))
    if answer.draft_check:
        lines.append(markup("[b]draft check[/] $check", check=draft_check_line(answer.draft_check)))
    for notice in answer.notices:
        lines.append(markup("[yellow]note[/] $notice", notice=notice))
    sent = (record or {}).get("sent")
    if sent:
        withheld = sent.get("private_notes_withheld", 0)
        lines.append(markup("[b]sent to[/] $endpoint ($model): $messages messages, notes $notes$withheld",
                            endpoint=sent["endpoint"], model=sent["model"], messages=len(sent["messages"]),
                            notes=json.dumps(sent["notes"]),
                            withheld=f", {withheld} private chunk(s) withheld" if withheld else ""))
    else:
        lines.append(markup("[b]sent[/] nothing left this machine"))
    lines.append(markup("[dim]answer id $id[/]", id=answer.id or "?"))
    return Content("\n").join(lines)
