"""Rich renderables for the CLI's human-readable output."""

from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table
from rich.text import Text


def short_path(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and path.startswith(home + os.sep) else path


def source_line(source) -> Text:
    text = Text(f"[{source.number}] ", style="bold cyan")
    text.append(short_path(source.path))
    if source.section:
        text.append(f" › {source.section}", style="italic")
    text.append(f" ({source.location})", style="dim")
    return text


def index_summary_table(summary) -> Table:
    table = Table(title="Index", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("files seen", str(summary.files_seen))
    table.add_row("indexed", f"{summary.indexed} ({summary.chunks_added} chunks)")
    table.add_row("unchanged", str(summary.unchanged))
    table.add_row("removed", str(summary.removed))
    table.add_row("skipped", str(len(summary.skipped)))
    table.add_row("index size", f"{summary.files_total} files, {summary.chunks_total} chunks")
    table.add_row("time", f"{summary.seconds:.2f} s" + (" (cancelled)" if summary.cancelled else ""))
    for item in summary.skipped[:20]:
        table.add_row("[yellow]skip[/]", Text(f"{short_path(item['path'])}: {item['reason']}"))
    if len(summary.skipped) > 20:
        table.add_row("", f"… and {len(summary.skipped) - 20} more (see --json)")
    for item in summary.warnings[:10]:
        table.add_row("[dim]warning[/]", Text(f"{short_path(item['path'])}: {item['warning']}"))
    return table


def status_table(info: dict) -> Table:
    table = Table(title="skiff status", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    exists = "" if info["config_file_exists"] else " (not created; defaults in use)"
    # Paths, the model's own name and the notes' folders are text, never markup.
    table.add_row("config file", Text(info["config_file"] + exists))
    table.add_row("data dir", Text(info["data_dir"]))
    model = info["model"]
    choice = info.get("model_choice")
    if choice:
        table.add_row("answering", Text(f"{choice['name']} ({choice['why']})"))
    if "error" in model:
        table.add_row("model", Text(model["error"], style="red"))
    else:
        table.add_row("model", Text(model["path"]))
        table.add_row(
            "",
            Text(f"{model['name']} · {model['architecture']} · {model['quantization'] or '?'} · "
                 f"{model['size_bytes'] / 1e6:.0f} MB · trained context {model['context_length']}"),
        )
    index = info["index"]
    if index.get("error"):
        table.add_row("index", Text(index["error"], style="red"))
    else:
        table.add_row("index", f"{index['files']} files, {index['chunks']} chunks")
    for root in index["roots"]:
        table.add_row("", Text(short_path(root)))
    table.add_row("personal adapter", info["personal_adapter"]["note"])
    table.add_row("answers", str(info["answers"]))
    table.add_row("cloud", Text(info["cloud"]))
    return table


def settings_table(values: dict, config_file: Path) -> Table:
    table = Table(title=f"settings ({short_path(str(config_file))})", title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(key, Text("" if value is None else str(value)))
    return table


def eval_table(block: dict) -> Table:
    data = block["data"]
    title = (f"{data['name']} · {block['protocol']} ({block['setup']}) · {data['prompts']} prompts, "
             f"{data['dropped_contaminated']} contaminated dropped · weak {data['weak_accuracy']:.3f}, "
             f"strong {data['strong_accuracy']:.3f}")
    table = Table(title=title, title_justify="left")
    for column in ("router", "APGR", "CPT(20%)", "CPT(50%)", "CPT(80%)"):
        table.add_column(column, justify="left" if column == "router" else "right")
    for row in block["routers"]:
        style = "dim" if row["router"] in ("random", "oracle") else None
        table.add_row(row["router"], f"{row['apgr']:.3f}", f"{row['cpt20']:.1%}", f"{row['cpt50']:.1%}",
                      f"{row['cpt80']:.1%}", style=style)
    published = block.get("published", {}).get("routellm_best_cpt50")
    if published is not None:
        table.caption = f"RouteLLM's best published CPT(50%) on {data['name']}: {published:.1%}"
    return table


def _tau(value: float | None) -> str:
    """τ as stats carry it: None stands for ±∞ (a share of 0 or 1: nothing, or everything, passes)."""
    return "±∞" if value is None else f"{value:.3f}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def router_stats_table(info: dict) -> Table:
    table = Table(title="router", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    share = "—" if info["cloud_share"] is None else f"{info['cloud_share']:.1%}"
    table.add_row("decisions", str(info["decisions"]))
    table.add_row("router chose", ", ".join(f"{k} {v}" for k, v in info["router_chose"].items()))
    table.add_row("ran", ", ".join(f"{k} {v}" for k, v in info["ran"].items()))
    table.add_row("cloud share", f"{share} (target {info['target_cloud_share']:.0%})")
    stages = info.get("stages")
    if stages:
        table.add_row("sent to the cloud", f"before a draft {stages['before_draft']} "
                                           f"({_share(stages['before_draft_share'])}), after a draft "
                                           f"{stages['after_draft']} ({_share(stages['after_draft_share'])}); "
                                           f"{stages['drafts_checked']} drafts checked")
    thresholds = info["thresholds"]
    if thresholds:
        table.add_row("thresholds",
                      f"cloud > {_tau(thresholds['cloud'])}, local+ > {_tau(thresholds['local_plus'])}")
        table.add_row("", Text(f"calibrated on {thresholds['calibrated_on']}", style="dim"))
    else:
        table.add_row("thresholds", "not calibrated yet (set on the first question)")
    check = info.get("draft_check")
    if check and check["share"] is not None:
        table.add_row("draft check", f"escalate below τ {_tau(check['threshold'])} "
                                     f"({_share(check['share'])} of drafts), "
                                     f"{check['observations']} observations since its prior")
        table.add_row("", Text(f"{check['model']}; calibrated on {check['calibrated_on']}", style="dim"))
    elif "draft_check" in info:
        table.add_row("draft check", "none for this model (no check was fitted for it)")
    feedback = info["feedback"]
    table.add_row("feedback", f"{feedback['good']} good, {feedback['bad']} bad")
    spend = info["cloud_spend"]
    budget = f" of ${spend['budget_usd']:.2f} budget" if spend.get("budget_usd") is not None else " (no budget set)"
    table.add_row("cloud spend", f"${spend['usd']:.4f}{budget} {spend['period']}: {spend['answers']} answer"
                                 f"{'' if spend['answers'] == 1 else 's'}, "
                                 f"{spend['tokens_in']} tokens in, {spend['tokens_out']} out")
    surrogate = info["surrogate"]
    table.add_row("surrogate", f"{surrogate['from']}, {surrogate['observations_since_prior']} observations, "
                               f"β={surrogate['beta']}")
    return table


STAGE_LABELS = {"load": "loading the training copy", "step": "training a LoRA on your notes",
                "sample": "sampling answers to vote on"}


class LocalWorkBar:
    """A transient progress bar on stderr for local+ work (adapter training, vote sampling); it
    goes away when the answer starts to print."""

    def __init__(self, console) -> None:
        self.console = console
        self._progress = None
        self._task = None
        self._stage = None

    def update(self, stage: str, done: int, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._progress is None:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=self.console, transient=True)
            self._progress.start()
        if stage != self._stage:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(STAGE_LABELS.get(stage, stage), total=total or None)
            self._stage = stage
        self._progress.update(self._task, completed=done, total=total or None)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def abstention_line(check: dict) -> str:
    """The notes check in a line: the verdict, its probability against the threshold, the signals."""
    verdict = "the notes do not hold the answer" if check.get("abstained") else "the notes hold the answer"
    signals = ", ".join(f"{name} {check[name]}" for name in
                        ("best_similarity", "covered", "rarest_missing", "coverage", "model_says_yes") if name in check)
    return f"{verdict} (p {check.get('probability')} vs threshold {check.get('threshold')}; {signals})"


def draft_check_line(check: dict) -> str:
    """The cascade's check of a local draft in a line: its reason, what came of it, its signals."""
    replaced = {"vote": "replaced by the vote's answer", "context": "replaced by an answer with more notes",
                "lora": "replaced by an answer with a test-time LoRA"}.get(check.get("replaced_by") or "")
    outcome = "escalated to the cloud" if check.get("escalated") else replaced or (
        "kept, marked unsure" if check.get("unsure") else "kept")
    signals = ", ".join(f"{name} {value}" for name, value in (check.get("signals") or {}).items())
    return (f"{check.get('reason', '')}; {outcome} (after {check.get('at_tokens')} tokens, "
            f"± {check.get('std')}; {signals})")


def allocation_line(allocation: dict | None) -> str:
    """local+ in one line: what kind of extra compute, and what came of it."""
    if not allocation:
        return ""
    why = allocation.get("reason", "")
    if allocation["kind"] == "vote" and allocation.get("vote"):
        vote = allocation["vote"]
        free_text = str(vote["answer"]).startswith(("the draft", "sample "))  # by consensus, not a value
        return (f"vote of the draft and {vote['samples'] - 1} samples, {vote['count']}/{vote['samples']} agree "
                f"{'with' if free_text else 'on'} {vote['answer']} — {why}")
    if allocation["kind"] == "lora" and allocation.get("training"):
        training = allocation["training"]
        return (f"test-time LoRA, {training['steps']} steps in {training['seconds']:.1f}s ({training['stop']}) "
                f"— {why}")
    if allocation["kind"] == "context" and allocation.get("context"):
        added = allocation["context"]
        return f"answered again with {added['notes_added']} more note chunks in context — {why}"
    return why
