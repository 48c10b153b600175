"""The router's math against brute-force references: SIFT, Bayesian linear regression, evidence,
RouteLLM's metrics and threshold calibration."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from skiff.router.coverage import posterior_variance, sift_select
from skiff.router.research.fitting import best_evidence
from skiff.router.research.metrics import oracle_curve, random_curve, router_curve
from skiff.router.surrogate import BayesianLinearRegression
from skiff.router.uncertainty import thresholds_from_scores


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# -- SIFT ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.01, 0.1, 1.0])
def test_sift_greedy_matches_brute_force(lam):
    rng = np.random.default_rng(1)
    query = unit(rng.normal(size=16))
    candidates = np.stack([unit(rng.normal(size=16) + 0.5 * query) for _ in range(12)])
    coverage = sift_select(query, candidates, k=5, lam=lam)
    chosen: list[int] = []
    for step in range(5):
        remaining = [i for i in range(len(candidates)) if i not in chosen]
        variances = [posterior_variance(query, candidates[chosen + [i]], lam) for i in remaining]
        best = remaining[int(np.argmin(variances))]
        assert coverage.selected[step] == best
        assert coverage.variances[step] == pytest.approx(min(variances), abs=1e-10)
        chosen.append(best)


def test_sift_passes_over_near_duplicates_that_top_k_takes():
    rng = np.random.default_rng(2)
    topic_a, topic_b = unit(rng.normal(size=32)), unit(rng.normal(size=32))
    query = unit(topic_a + 0.8 * topic_b)
    duplicates = [unit(topic_a + 0.01 * rng.normal(size=32)) for _ in range(4)]
    candidates = np.stack(duplicates + [topic_b, unit(rng.normal(size=32))])
    top_k = list(np.argsort(-(candidates @ query))[:2])
    assert set(top_k) <= {0, 1, 2, 3}, "the test needs top-k to pick two near-duplicates"
    chosen = sift_select(query, candidates, k=2, lam=0.01).selected
    assert chosen[0] in {0, 1, 2, 3} and chosen[1] == 4
    # And the context SIFT chose explains the question better than top-k's.
    assert posterior_variance(query, candidates[chosen]) < posterior_variance(query, candidates[top_k]) - 0.1


def test_variance_falls_as_relevant_chunks_are_added():
    rng = np.random.default_rng(3)
    query = unit(rng.normal(size=24))
    relevant = np.stack([unit(query + 0.15 * rng.normal(size=24)) for _ in range(6)])
    variances = [posterior_variance(query, relevant[:n]) for n in range(0, 7)]
    assert variances[0] == pytest.approx(1.0)
    assert all(later < earlier for earlier, later in zip(variances, variances[1:]))
    # An unrelated chunk barely helps; a relevant one helps a lot.
    other = rng.normal(size=24)
    unrelated = unit(other - (other @ query) * query)
    assert posterior_variance(query, unrelated[None]) == pytest.approx(1.0)
    assert posterior_variance(query, relevant[:1]) < 0.5


def test_sift_handles_edge_cases():
    query = unit([1.0, 0.0])
    assert sift_select(query, np.zeros((0, 2)), k=3).variance == pytest.approx(1.0)
    assert sift_select(query, np.stack([query]), k=0).selected == []
    only = sift_select(query, np.stack([query, query]), k=5, lam=0.01)
    assert len(only.selected) == 2 and only.variance < 0.01
    # min_gain stops early once nothing useful is left.
    stopped = sift_select(query, np.stack([query, unit([0.0, 1.0])]), k=2, min_gain=1e-3)
    assert stopped.selected == [0]


# -- Bayesian linear regression -----------------------------------------------------------------


def _data(n=80, d=6, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return x, x @ rng.normal(size=d) + 0.3 * rng.normal(size=n)


def test_blr_posterior_matches_the_closed_form():
    x, y = _data()
    prior_var, noise = 2.0, 0.09
    model = BayesianLinearRegression.isotropic(x.shape[1], prior_var, noise)
    for row, target in zip(x, y):
        model.update(row, target)
    precision = np.eye(x.shape[1]) / prior_var + x.T @ x / noise
    covariance = np.linalg.inv(precision)
    mean = covariance @ (x.T @ y / noise)
    np.testing.assert_allclose(model.mean, mean, atol=1e-9)
    np.testing.assert_allclose(model.covariance, covariance, atol=1e-9)
    probe = np.ones(x.shape[1])
    prediction = model.predict(probe)
    assert prediction.mean == pytest.approx(probe @ mean)
    assert prediction.std == pytest.approx(np.sqrt(probe @ covariance @ probe))
    means, stds = model.predict_many(x[:3])
    np.testing.assert_allclose(means, x[:3] @ mean, atol=1e-9)


def test_blr_can_take_an_observation_back():
    x, y = _data()
    model = BayesianLinearRegression.isotropic(x.shape[1])
    model.fit(x, y)
    model.update(x[0], y[0], weight=-1.0)
    without = BayesianLinearRegression.isotropic(x.shape[1])
    without.fit(x[1:], y[1:])
    np.testing.assert_allclose(model.mean, without.mean, atol=1e-9)
    fresh = BayesianLinearRegression.isotropic(x.shape[1])
    with pytest.raises(ValueError):
        fresh.update(np.ones(x.shape[1]) * 100, 1.0, weight=-1.0)


def test_an_observation_moves_the_prediction_and_shrinks_its_uncertainty():
    model = BayesianLinearRegression.isotropic(3, prior_variance=1.0, noise_variance=0.25)
    phi = np.array([1.0, 0.5, 0.0])
    before = model.predict(phi)
    model.update(phi, 1.0)
    after = model.predict(phi)
    assert after.mean > before.mean + 0.5 and after.std < before.std


def test_evidence_matches_the_gaussian_marginal_likelihood():
    x, y = _data(n=40, d=4)
    chosen = best_evidence(x, y)

    def log_marginal(alpha, beta):
        covariance = x @ x.T / alpha + np.eye(len(y)) / beta
        sign, logdet = np.linalg.slogdet(covariance)
        return -0.5 * (logdet + y @ np.linalg.solve(covariance, y) + len(y) * np.log(2 * np.pi))

    assert chosen.log_evidence == pytest.approx(log_marginal(chosen.alpha, chosen.beta), rel=1e-8)
    # No grid neighbour is better.
    for alpha, beta in itertools.product(
        [chosen.alpha / 1.6, chosen.alpha * 1.6], [chosen.beta / 1.6, chosen.beta * 1.6]
    ):
        assert log_marginal(alpha, beta) <= chosen.log_evidence + 1e-6


_WRITER = """
import sys, numpy as np
from skiff.router.surrogate import BayesianLinearRegression
path = sys.argv[1]
model = BayesianLinearRegression.isotropic(300)
rng = np.random.default_rng(0)
print("ready", flush=True)
while True:
    model.update(rng.normal(size=300), 1.0)
    model.meta["count"] = model.observations
    model.save(path)
"""


@pytest.mark.parametrize("delay", [0.3, 0.9])
def test_the_posterior_survives_kill_9_mid_write(tmp_path, delay):
    path = tmp_path / "surrogate.npz"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(delay)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    model = BayesianLinearRegression.load(path)
    assert model.observations >= 1 and model.meta["count"] == model.observations
    assert [p.name for p in tmp_path.iterdir() if p.name != "surrogate.npz" and not p.name.endswith(".tmp")] == []


# -- RouteLLM's metrics --------------------------------------------------------------------------


def test_curve_by_hand():
    weak = np.array([1, 0, 0, 1], dtype=float)
    strong = np.array([1, 1, 1, 0], dtype=float)
    scores = np.array([0.1, 0.9, 0.5, 0.7])  # order: item 1 (+1), item 3 (−1), item 2 (+1), item 0 (0)
    curve = router_curve(scores, weak, strong)
    np.testing.assert_allclose(curve.accuracy, [0.5, 0.75, 0.5, 0.75, 0.75])
    assert curve.weak_accuracy == 0.5 and curve.strong_accuracy == 0.75
    np.testing.assert_allclose(curve.pgr, [0, 1, 0, 1, 1])
    assert curve.apgr == pytest.approx((0.5 + 0.5 + 0.5 + 1) / 4)
    assert curve.cpt(0.5) == 0.25


def test_ties_score_like_random_and_oracle_is_best():
    rng = np.random.default_rng(5)
    weak = (rng.random(500) < 0.6).astype(float)
    strong = np.maximum(weak, (rng.random(500) < 0.7)).astype(float)
    flat = router_curve(np.full(500, 3.0), weak, strong)
    assert flat.apgr == pytest.approx(0.5, abs=1e-9)
    assert random_curve(weak, strong).cpt(0.5) == pytest.approx(0.5, abs=0.01)
    oracle = oracle_curve(weak, strong)
    gain_share = np.mean(strong > weak)
    assert oracle.cpt(1.0) == pytest.approx(gain_share, abs=1e-9)
    for _ in range(5):
        assert router_curve(rng.random(500), weak, strong).apgr <= oracle.apgr


# -- calibration ----------------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_thresholds_hit_their_target_share(share):
    scores = np.random.default_rng(6).normal(size=2000)
    thresholds = thresholds_from_scores(scores, share, 0.1, "test")
    assert np.mean(scores > thresholds.cloud) == pytest.approx(share, abs=0.005)
    assert np.mean(scores > thresholds.local_plus) == pytest.approx(share + 0.1, abs=0.005)
    with pytest.raises(ValueError):
        thresholds_from_scores(scores, 0.8, 0.5, "test")


def test_auroc_counts_the_pairs_a_score_orders_right():
    from skiff.router.research.metrics import auroc

    wrong = np.array([True, True, False, False])
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), wrong) == 1.0
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), wrong) == 0.0
    assert auroc(np.zeros(4), wrong) == 0.5  # ties count half: no ordering, no credit
    assert auroc(np.array([0.9, 0.1, 0.5, 0.2]), wrong) == 0.5  # 2 of the 4 pairs ordered right
    assert np.isnan(auroc(np.array([0.3, 0.4]), np.array([True, True])))
