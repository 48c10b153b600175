"""`skiff router ...` and `skiff feedback`: evaluating, calibrating and teaching the router."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from skiff.app.common import assistant_session, dump, err, fail, out
from skiff.app.render import eval_table, router_stats_table

# RouteLLM's column names, the defaults of every command that reads its tables.
WEAK_COLUMN = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_COLUMN = "gpt-4-1106-preview"

router_app = typer.Typer(help="Evaluate, calibrate and inspect the router.", no_args_is_help=True)


@router_app.command("eval")
def evaluate(
    data: list[Path] = typer.Option(
        ..., "--data", help="RouteLLM-format CSV file or folder; repeat for more datasets."
    ),
    protocol: str = typer.Option("cv", help="cv, transfer or online."),
    train: Optional[list[Path]] = typer.Option(
        None, "--train", help="Training data for transfer/online (default: the other --data sets)."
    ),
    test: Optional[list[Path]] = typer.Option(None, "--test", help="Evaluate only these (default: every --data set)."),
    weak_col: str = typer.Option(WEAK_COLUMN, help="Column of the weak (local) model's correctness."),
    strong_col: str = typer.Option(STRONG_COLUMN, help="Column of the strong (cloud) model's correctness."),
    folds: int = typer.Option(5, help="Folds for cv."),
    seed: int = typer.Option(0, help="Seed for folds and the online order."),
    ablation: bool = typer.Option(False, help="Also evaluate the simpler routers skiff's is built from."),
    draft_col: Optional[str] = typer.Option(
        None, help="The weak model's response column: adds a cascade router that also reads the local draft."
    ),
    plot: Optional[Path] = typer.Option(None, help="Write the accuracy-vs-strong-share curves to this PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """APGR, CPT(20/50/80%) and the full curve, beside random and oracle routers."""
    from skiff.router.research.evaluation import run_eval
    from skiff.router.research.routing_data import RoutingDataError

    if protocol not in ("cv", "transfer", "online"):
        fail(f"unknown protocol {protocol!r}; use cv, transfer or online")
    with assistant_session() as assistant:
        try:
            with err.status("embedding prompts (cached after the first run)…"):
                result = run_eval(assistant.embedder, assistant.settings.cache_dir, data, protocol,
                                  train=train, test=test, weak_col=weak_col, strong_col=strong_col,
                                  folds=folds, seed=seed, ablation=ablation, draft_col=draft_col)
        except (RoutingDataError, ValueError) as error:
            fail(str(error))
    if plot is not None:
        from skiff.router.research.evaluation import plot_curves

        try:
            plot_curves(result, plot)
        except ImportError:
            fail("--plot needs matplotlib: pip install 'skiff[plot]'")
    if as_json:
        dump(result)
    else:
        for block in result["blocks"]:
            out.print(eval_table(block))


@router_app.command()
def calibrate(
    cloud_share: Optional[float] = typer.Option(None, help="Share of questions to send to the cloud, 0..1."),
    budget: Optional[float] = typer.Option(
        None,
        help="Monthly cloud budget in USD: the share it affords, from your "
        "question rate and the recorded cost of your cloud answers.",
    ),
    local_plus_share: Optional[float] = typer.Option(
        None, help="Share to give more local compute (default from config)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set the thresholds so that a target share of recent questions goes to the cloud (some before
    a draft, the rest by the draft check), or the share a monthly budget affords."""
    from skiff.router.policy import json_number

    if (cloud_share is None) == (budget is None):
        fail("give exactly one of --cloud-share and --budget")
    with assistant_session() as assistant:
        try:
            if budget is not None:
                cloud_share, how = assistant.budget_share(budget)
                err.print(f"[dim]{how}[/]", highlight=False)
                if local_plus_share is not None:
                    local_plus_share = min(local_plus_share, 1.0 - cloud_share)
            thresholds = assistant.calibrate(cloud_share, local_plus_share)
            check = assistant.draft_check()
            after = check.threshold() if check is not None else None
        except ValueError as error:
            fail(str(error))
    if as_json:
        dump({**thresholds.as_dict(), "cloud": json_number(thresholds.cloud),
              "local_plus": json_number(thresholds.local_plus),
              "draft_check": None if after is None else {**after.as_dict(), "threshold": json_number(after.threshold)}})
        return
    out.print(f"before a draft: cloud above τ={thresholds.cloud:.3f} ({thresholds.sent_before_draft:.0%}), local+ "
              f"above τ={thresholds.local_plus:.3f} ({thresholds.local_plus_share:.0%}); "
              f"calibrated on {thresholds.calibrated_on}", highlight=False)
    if after is not None:
        out.print(f"after a draft: escalate below τ={after.threshold:.3f} ({after.share:.0%} of drafts, for "
                  f"{thresholds.cloud_share:.0%} in all); calibrated on {after.calibrated_on}", highlight=False)


@router_app.command()
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Escalation share against its target, feedback counts, thresholds and the surrogate's state."""
    with assistant_session() as assistant:
        info = assistant.router_stats()
    if as_json:
        dump(info)
    else:
        out.print(router_stats_table(info))


@router_app.command()
def reset(yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Forget what the router learned from your feedback (back to the shipped prior)."""
    if not yes:
        typer.confirm("Forget everything the router learned from your feedback?", abort=True)
    with assistant_session() as assistant:
        assistant.reset_router()
    out.print("the router is back to its shipped prior; feedback history is kept in the database")


def feedback(
    verdict: str = typer.Argument(..., help="good or bad."),
    answer_id: Optional[str] = typer.Argument(None, help="The answer's id (default: the latest answer)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Tell the router whether an answer was good; it learns which questions need the cloud."""
    from skiff.router.feedback import FeedbackError

    with assistant_session() as assistant:
        try:
            result = assistant.feedback(verdict, answer_id)
        except FeedbackError as error:
            fail(str(error))
    if as_json:
        dump(result.as_dict())
    else:
        out.print(f"{result.answer_id}: {result.message}", highlight=False)


@router_app.command("fit-prior")
def fit_prior(
    data: list[str] = typer.Option(..., "--data", help="RouteLLM-format CSV file or folder, or PATH=WEAK,STRONG "
                                                       "naming its own columns; repeat for more."),
    out_path: Path = typer.Option(..., "--out", help="Where to write the prior (.npz); point router_prior at it."),
    weak_col: str = typer.Option(WEAK_COLUMN, help="Weak (local) model's column."),
    strong_col: str = typer.Option(STRONG_COLUMN, help="Strong (cloud) model's column."),
    effective_questions: Optional[int] = typer.Option(
        None, help="Temper the prior to weigh as much as this many questions (default: as the shipped prior, 1000)."
    ),
) -> None:
    """Fit the router's prior on per-query correctness data (how the shipped prior was made)."""
    from skiff.router.research.embed_cache import EmbeddingCache
    from skiff.router.research.prior import fit_prior_file
    from skiff.router.research.routing_data import RoutingDataError, data_source, load_routing_data

    with assistant_session() as assistant:
        try:
            datasets = []
            for spec in data:
                path, weak, strong = data_source(spec)
                datasets.append(load_routing_data(path, weak or weak_col, strong or strong_col))
            embed = EmbeddingCache.for_embedder(assistant.embedder, assistant.settings.cache_dir)
            with err.status("embedding prompts and fitting…"):
                model = fit_prior_file(embed, datasets, out_path, effective_questions)
        except (RoutingDataError, ValueError) as error:
            fail(str(error))
    names = ", ".join(f"{d['name']} ({d['prompts']})" for d in model.meta["datasets"])
    out.print(f"wrote {out_path}: fitted on {names}; α={model.meta['alpha']:.3g}, β={model.meta['beta']:.3g}",
              highlight=False)
