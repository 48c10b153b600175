"""`skiff router eval`: how well the router ranks questions by how much the cloud would help,
on per-query correctness tables (RouteLLM's format), under three protocols:

- cv: k-fold cross-validation within one dataset; every question is scored by a surrogate that
  never saw it.
- transfer: fit on one dataset, score another (out of domain).
- online: the test questions arrive in a seeded random order; the router scores each one before
  it sees that question's label, then learns from it, starting from a prior fitted on the other
  datasets given (never on the test set itself), as skiff lives with a person.

Each protocol reports APGR, CPT(20/50/80%) and the accuracy-vs-strong-share curve, beside the
random router and the oracle on the same questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from skiff.router.research.embed_cache import EmbeddingCache
from skiff.router.features import TEXT_CLIP, FeatureMap
from skiff.router.research.draft_features import draft_features
from skiff.router.research.fitting import fit_blr
from skiff.router.research.metrics import oracle_curve, random_curve, router_curve
from skiff.router.research.prior import DEFAULT_EFFECTIVE_QUESTIONS, temper
from skiff.router.research.routing_data import DEFAULT_STRONG, DEFAULT_WEAK, RoutingData, load_routing_data
from skiff.router.surrogate import BayesianLinearRegression

# Turns a dataset into its feature matrix; `fitted_on` is the training data, whose statistics
# (text-feature standardisation) a feature builder may use — never the test set's.
FeatureBuilder = Callable[[RoutingData, RoutingData], np.ndarray]


@dataclass(frozen=True)
class RouterSpec:
    """One router of the ablation: how it builds features and how it turns a posterior into a score."""

    name: str
    features: FeatureBuilder
    beta: float = 0.0  # score = μ + β·σ; 0 ranks by the posterior mean


def embedding_features(embed: Callable[[list[str]], np.ndarray]) -> FeatureBuilder:
    def build(data: RoutingData, fitted_on: RoutingData) -> np.ndarray:
        vectors = embed(data.prompts)
        return np.hstack([vectors, np.ones((len(data), 1))])

    return build


def surrogate_features(embed: Callable[[list[str]], np.ndarray]) -> FeatureBuilder:
    """What skiff's router uses: FeatureMap's φ(x) (embedding + standardised text features)."""

    def build(data: RoutingData, fitted_on: RoutingData) -> np.ndarray:
        feature_map = FeatureMap.fitted(fitted_on.prompts)
        return feature_map.many(data.prompts, embed(data.prompts))

    return build


def cascade_features(embed: Callable[[list[str]], np.ndarray]) -> FeatureBuilder:
    """skiff's φ(x) plus features of the weak model's own answer, standardised on the training
    data: a router that decides after a local draft (a cascade), not before any call."""
    base = surrogate_features(embed)

    def build(data: RoutingData, fitted_on: RoutingData) -> np.ndarray:
        if data.drafts is None or fitted_on.drafts is None:
            raise ValueError(f"{data.name}: no draft column for the cascade router (--draft-col)")
        train = np.stack([draft_features(d) for d in fitted_on.drafts])
        scale = np.where(train.std(axis=0) > 1e-9, train.std(axis=0), 1.0)
        drafts = (np.stack([draft_features(d) for d in data.drafts]) - train.mean(axis=0)) / scale
        return np.hstack([base(data, fitted_on), np.clip(drafts, -TEXT_CLIP, TEXT_CLIP)])

    return build


def _scores(model: BayesianLinearRegression, features: np.ndarray, beta: float) -> np.ndarray:
    means, stds = model.predict_many(features)
    return means + beta * stds


def _report(name: str, scores: np.ndarray, data: RoutingData) -> dict:
    curve = router_curve(scores, data.weak, data.strong)
    return {"router": name, **curve.summary(), "curve": curve.points()}


def _baselines(data: RoutingData) -> list[dict]:
    rows = []
    for name, curve in (
        ("random", random_curve(data.weak, data.strong)),
        ("oracle", oracle_curve(data.weak, data.strong)),
    ):
        rows.append({"router": name, **curve.summary(), "curve": curve.points()})
    return rows


def cross_validate(spec: RouterSpec, data: RoutingData, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold scores for every question of `data`."""
    order = np.random.default_rng(seed).permutation(len(data))
    scores = np.empty(len(data))
    for fold in np.array_split(order, folds):
        train_index = np.setdiff1d(order, fold)
        train = data.subset(train_index)
        model = fit_blr(spec.features(train, train), train.gain)
        scores[fold] = _scores(model, spec.features(data.subset(fold), train), spec.beta)
    return scores


def transfer(spec: RouterSpec, train: RoutingData, test: RoutingData) -> np.ndarray:
    model = fit_blr(spec.features(train, train), train.gain)
    return _scores(model, spec.features(test, train), spec.beta)


def online(spec: RouterSpec, prior_data: RoutingData, test: RoutingData, seed: int = 0,
           effective_questions: int = DEFAULT_EFFECTIVE_QUESTIONS) -> np.ndarray:
    """Scores given before each label is seen, in a seeded arrival order, starting from a prior
    made as the shipped one is (fitted, then tempered; router/research/prior.py)."""
    model = temper(fit_blr(spec.features(prior_data, prior_data), prior_data.gain), len(prior_data),
                   effective_questions)
    features = spec.features(test, prior_data)
    scores = np.empty(len(test))
    for i in np.random.default_rng(seed).permutation(len(test)):
        scores[i] = _scores(model, features[i : i + 1], spec.beta)[0]
        model.update(features[i], float(test.gain[i]))
    return scores


def merge(datasets: list[RoutingData], name: str) -> RoutingData:
    drafts = ([t for d in datasets for t in d.drafts] if all(d.drafts is not None for d in datasets) else None)
    return RoutingData(
        name,
        [p for d in datasets for p in d.prompts],
        np.concatenate([d.weak for d in datasets]),
        np.concatenate([d.strong for d in datasets]),
        sum(d.dropped_contaminated for d in datasets),
        [s for d in datasets for s in d.sources],
        drafts,
    )


def evaluate(protocol: str, specs: list[RouterSpec], datasets: list[RoutingData],
             train: list[RoutingData] | None = None, folds: int = 5, seed: int = 0) -> list[dict]:
    """One block per test dataset: its description, the routers' results and the baselines."""
    blocks = []
    for data in datasets:
        rows = []
        if protocol == "cv":
            for spec in specs:
                rows.append(_report(spec.name, cross_validate(spec, data, folds, seed), data))
            setup = f"{folds}-fold cross-validation, seed {seed}"
        else:
            sources = [d for d in (train or datasets) if d.name != data.name]
            if not sources:
                raise ValueError(f"{protocol} needs training data other than {data.name} (--train)")
            prior = merge(sources, "+".join(d.name for d in sources))
            for spec in specs:
                scores = transfer(spec, prior, data) if protocol == "transfer" else online(spec, prior, data, seed)
                rows.append(_report(spec.name, scores, data))
            setup = (f"fitted on {prior.name}" if protocol == "transfer"
                     else f"prior fitted on {prior.name}, then learning online in a seeded order (seed {seed})")
        blocks.append({"protocol": protocol, "setup": setup, "data": data.describe(),
                       "routers": rows + _baselines(data)})
    return blocks


# RouteLLM's best published CPT(50%) (arXiv 2406.18665, Tables) and the anchor of a MiniLM
# embedding with Bayesian linear regression (skiff's baseline router).
PUBLISHED = {
    "gsm8k": {"routellm_best_cpt50": 0.336},
    "mmlu": {"routellm_best_cpt50": 0.354},
}


def router_specs(embed: Callable[[list[str]], np.ndarray], beta: float, ablation: bool,
                 cascade: bool = False) -> list[RouterSpec]:
    skiff = RouterSpec("skiff", surrogate_features(embed), beta=beta)
    specs = [skiff]
    if ablation:
        specs = [RouterSpec("MiniLM + BLR (baseline)", embedding_features(embed)),
                 RouterSpec("+ text features", surrogate_features(embed)), skiff]
    if cascade:
        specs.append(RouterSpec("skiff + local draft (cascade)", cascade_features(embed), beta=beta))
    return specs


def run_eval(embedder, cache_dir, data: list, protocol: str, train: list | None = None, test: list | None = None,
             weak_col: str = DEFAULT_WEAK, strong_col: str = DEFAULT_STRONG,
             folds: int = 5, seed: int = 0, ablation: bool = False, beta: float = 1.0,
             draft_col: str | None = None) -> dict:
    def load(sources) -> list[RoutingData]:
        return [load_routing_data(s, weak_col, strong_col, draft_col=draft_col) for s in sources or []]

    datasets = load(data)
    training = load(train) or None
    tested = load(test) or datasets
    embed = EmbeddingCache.for_embedder(embedder, cache_dir)
    pool = training or datasets
    blocks = []
    for data in tested:
        # The cascade row only where the weak model's answers are in the table (GSM8K, not MMLU),
        # and for transfer/online only when the training data has them too.
        others = [d for d in pool if d.name != data.name]
        cascade = data.drafts is not None and (protocol == "cv" or all(d.drafts is not None for d in others))
        specs = router_specs(embed, beta, ablation, cascade=cascade)
        blocks += evaluate(protocol, specs, [data], train=pool if protocol != "cv" else None, folds=folds, seed=seed)
    for block in blocks:
        block["published"] = PUBLISHED.get(block["data"]["name"], {})
    return {"protocol": protocol, "blocks": blocks}


def plot_curves(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = result["blocks"]
    figure, axes = plt.subplots(1, len(blocks), figsize=(6 * len(blocks), 4.5), squeeze=False)
    for axis, block in zip(axes[0], blocks):
        for row in block["routers"]:
            xs = [p["strong_share"] for p in row["curve"]]
            ys = [p["accuracy"] for p in row["curve"]]
            axis.plot(xs, ys, label=f"{row['router']} (APGR {row['apgr']:.3f})",
                      linestyle="--" if row["router"] in ("random", "oracle") else "-")
        axis.set_title(f"{block['data']['name']} — {block['protocol']}")
        axis.set_xlabel("share of questions sent to the strong model")
        axis.set_ylabel("accuracy")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
