"""The router on real parts: SIFT retrieval over a real index, decisions recorded with their
signals, feedback that changes later decisions, overrides that never mislabel, calibration, and
`skiff router eval` on the public routing data."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from conftest import SHARED, run_skiff
from skiff.assistant import Assistant
from skiff.config import load_settings
from skiff.router.records import new_answer_id
from skiff.router.state import Thresholds

ROUTING = SHARED / "data" / "routing"
DRAFT_COLUMN = "mistralai/Mixtral-8x7B-Instruct-v0.1_response"

PANCAKES = "# Pancakes\n\nMix 200 g flour, 2 eggs and 300 ml milk. Rest the batter for 30 minutes.\n"
SKILLET = "# Skillet\n\nHeat the cast-iron skillet on medium and grease it with butter before each pancake.\n"


def quick(**overrides):
    return Assistant(load_settings(max_tokens=4, **overrides))


def test_sift_context_skips_duplicates_that_top_k_would_take(skiff_home, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    for name in ("Pancakes.md", "Pancakes copy.md", "Pancakes copy 2.md"):
        (notes / name).write_text(PANCAKES)
    (notes / "Skillet.md").write_text(SKILLET)
    assistant = quick(top_k=2)
    try:
        assistant.index([notes])
        question = ("How much flour, eggs and milk go into pancake batter, how long does it rest, and should the "
                    "skillet be greased?")
        embedding = assistant.embedder.encode_query(question)
        top_two = [hit.path for hit in assistant.notes.search(embedding, 2)]
        assert all("Pancakes" in path for path in top_two), "plain top-k takes two copies"
        consulted = assistant.consult_notes(question)
        picked = sorted(hit.path.rsplit("/", 1)[-1] for hit in consulted.hits)
        assert picked[-1] == "Skillet.md" and picked[0].startswith("Pancakes")
        # More notes that cover the question leave less uncertainty.
        one = assistant.consult_notes(question, k=1).coverage
        assert consulted.coverage < one < 1.0
    finally:
        assistant.close()


def test_coverage_is_high_when_no_note_is_about_the_question(skiff_home, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "Pancakes.md").write_text(PANCAKES)
    assistant = quick()
    try:
        assistant.index([notes])
        covered = assistant.consult_notes("How long should pancake batter rest?").coverage
        uncovered = assistant.consult_notes("What is the escape velocity of Jupiter?").coverage
        assert covered < uncovered and uncovered > 0.8
    finally:
        assistant.close()


def test_decision_record_has_signals_threshold_and_reason(skiff_home, tmp_path):
    assistant = quick()
    try:
        answer = assistant.ask("What is 17 times 23?", use_notes=False)
        record = assistant.records.get(answer.id)
        signals = answer.decision.signals
        assert record["signals"] == signals and record["reason"] == answer.decision.reason
        assert signals["sigma2"] is None and "notes not consulted" in answer.decision.reason
        assert {"gain_mean", "gain_std", "score", "threshold_cloud", "threshold_local_plus"} <= set(signals)
        expected = ("cloud" if signals["score"] > signals["threshold_cloud"]
                    else "local+" if signals["score"] > signals["threshold_local_plus"] else "local")
        assert answer.route == expected
        stored = assistant.records.features(answer.id)
        assert stored is not None and len(stored) == assistant.router_state.feature_map().dim
    finally:
        assistant.close()


def _score(assistant, question):
    return assistant.decide(question, use_notes=False).signals


def test_bad_feedback_raises_later_scores_and_flips_the_route(skiff_home):
    question = "Write a haiku about the sea."
    assistant = quick()
    try:
        before = _score(assistant, question)
        # Thresholds a little above this question's score, so it starts out local (split between
        # the stages as the settings split it, or the router would recalibrate them at once).
        assistant.router_state.save_thresholds(
            Thresholds(before["score"] + 0.15, before["score"] + 0.05, 0.2, 0.2, "test", decisions_at=10**6,
                       before_draft_share=assistant.settings.cloud_share_before_draft))
        routes = []
        for _ in range(12):
            answer = assistant.ask(question, use_notes=False)
            routes.append(answer.route)
            if answer.route == "cloud":
                break
            assistant.feedback("bad")
        after = _score(assistant, question)
        assert after["gain_mean"] > before["gain_mean"] + 0.2
        assert routes[0] != "cloud" and routes[-1] == "cloud", routes
        # A related question moves too; an unrelated one much less.
        related = _score(assistant, "Write a short poem about the ocean.")
        assert related["gain_mean"] > before["gain_mean"]
    finally:
        assistant.close()
    # The learning is persisted: a new process sees it.
    again = quick()
    try:
        assert _score(again, question)["gain_mean"] == pytest.approx(after["gain_mean"], abs=1e-6)
        stats = json.loads(run_skiff("router", "stats", "--json").stdout)
        assert stats["feedback"]["bad"] == len(routes) - 1 and stats["surrogate"]["from"] == "your posterior"
    finally:
        again.close()


def test_an_override_never_trains_the_router_wrongly(skiff_home):
    assistant = quick()
    try:
        forced = assistant.ask("Summarise the causes of the French revolution.", use_notes=False, route="cloud")
        assert forced.decision.overridden and forced.answered_by == "local"
        # Overriding alone teaches nothing.
        assert not assistant.router_state.posterior_path.exists()
        result = assistant.feedback("bad", forced.id)
        # It was the local model that wrote the bad answer (no endpoint), so that is the lesson:
        # the cloud might have helped (positive target), not "the cloud was bad".
        assert result.answered_by == "local" and result.target > 0
        changed = assistant.feedback("good", forced.id)
        assert changed.changed and changed.target < 0
        same = assistant.feedback("good", forced.id)
        assert not same.changed
        # Retraction + new verdict: the posterior holds exactly one observation of this answer.
        assert assistant.router_state.surrogate().observations == 1
        assert assistant.records.feedback_counts() == {"good": 1, "bad": 0}
        stats = assistant.router_stats()
        assert stats["ran"]["local"] == 1 and stats["ran"]["cloud"] == 0
        assert sum(stats["router_chose"].values()) == 1
    finally:
        assistant.close()


def test_feedback_events_survive_a_crash_before_learning(skiff_home):
    assistant = quick()
    try:
        answer = assistant.ask("Name three prime numbers.", use_notes=False)
        # As if the process died between writing the event and writing the posterior.
        assistant.records.record_verdict(answer.id, "bad", [(answer.id, "single", "bad", "local", 0.8, 1.0)])
        assert assistant.router_state.surrogate().observations == 0
    finally:
        assistant.close()
    for _ in range(2):  # absorbed once by the next process, never twice
        later = quick()
        try:
            later.ask("Name three prime numbers.", use_notes=False)
            assert later.router_state.surrogate().observations == 1
        finally:
            later.close()


def test_calibration_hits_its_target_share(skiff_home):
    assistant = quick()
    questions = [f"Question {n}: {topic}" for n, topic in enumerate(
        ["prove that sqrt 2 is irrational", "what is the capital of France", "integrate x^2 sin x dx",
         "translate 'good morning' into German", "explain quantum entanglement", "list the planets",
         "solve 3x + 7 = 22", "who wrote Hamlet", "derive the quadratic formula", "what is a noun",
         "compare TCP and UDP", "how many legs does a spider have", "what causes inflation",
         "write a regex for email addresses", "what is photosynthesis", "summarise World War I",
         "what is 2 + 2", "explain Gödel's incompleteness theorems", "how do vaccines work",
         "what is the boiling point of water", "design a distributed cache", "spell 'necessary'",
         "what is the derivative of e^x", "why is the sky blue", "name a mammal that lays eggs"])]
    try:
        for question in questions:
            decision = assistant.decide(question, use_notes=False)
            assistant.records.start(new_answer_id(), question, decision, "local", "test")
    finally:
        assistant.close()
    # The first stage alone (no draft check): all of the cloud share goes before a draft.
    alone = {**os.environ, "SKIFF_CHECK_DRAFTS": "false"}
    result = json.loads(run_skiff("router", "calibrate", "--cloud-share", "0.2", "--local-plus-share", "0.2",
                                  "--json", env=alone).stdout)
    assert "25 most recent" in result["calibrated_on"] and result["before_draft_share"] is None
    check = quick(check_drafts=False)
    try:
        scores = check.policy.scores(check.records.recent_features(100))
        assert np.mean(scores > result["cloud"]) == pytest.approx(0.2, abs=0.05)
        assert np.mean(scores > result["local_plus"]) == pytest.approx(0.4, abs=0.05)
        routes = [check.decide(q, use_notes=False).route for q in questions]
        assert routes.count("cloud") == pytest.approx(5, abs=1)
    finally:
        check.close()
    # The cascade (as shipped): 5% before a draft, no local+ band before a draft; the draft check
    # is left the rest of the 20%, out of the 95% drafted.
    result = json.loads(run_skiff("router", "calibrate", "--cloud-share", "0.2", "--local-plus-share", "0",
                                  "--json").stdout)
    assert result["before_draft_share"] == 0.05 and result["cloud_share"] == 0.2
    check = quick()
    try:
        scores = check.policy.scores(check.records.recent_features(100))
        assert np.mean(scores > result["cloud"]) == pytest.approx(0.05, abs=0.05)
        assert result["local_plus"] == result["cloud"]
        assert check.router_state.thresholds().drafts_to_escalate == pytest.approx(0.15 / 0.95)
        draft_check = check.draft_check()
        assert draft_check.threshold().share == pytest.approx(0.15 / 0.95)
    finally:
        check.close()


# -- skiff router eval ------------------------------------------------------------------------------


@pytest.fixture
def small_routing(tmp_path):
    """200 GSM8K rows and two MMLU subjects of the real routing data, with a decontamination list."""
    if not ROUTING.is_dir():
        pytest.skip("../shared/data/routing is not beside the repository")
    folder = tmp_path / "routing"
    (folder / "mmlu").mkdir(parents=True)
    with open(ROUTING / "gsm8k_responses.csv", newline="") as source:
        rows = list(csv.DictReader(source))[:200]
    with open(folder / "gsm8k_responses.csv", "w", newline="") as target:
        writer = csv.DictWriter(
            target,
            fieldnames=["prompt", "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview", DRAFT_COLUMN],
            extrasaction="ignore",
        )
        writer.writeheader()
        writer.writerows(rows)
    (folder / "gsm8k_contaminated_prompts.jsonl").write_text(json.dumps({"eval_prompt": rows[0]["prompt"]}) + "\n")
    for subject in ("mmlu_astronomy.csv", "mmlu_management.csv"):
        shutil.copy(ROUTING / "mmlu" / subject, folder / "mmlu" / subject)
    return folder


def test_router_eval_cv_reports_metrics_and_baselines(skiff_home, small_routing):
    result = json.loads(run_skiff("router", "eval", "--data", str(small_routing / "gsm8k_responses.csv"),
                                  "--data", str(small_routing / "mmlu"), "--ablation", "--json", timeout=600).stdout)
    gsm8k, mmlu = result["blocks"]
    assert gsm8k["data"]["prompts"] == 199 and gsm8k["data"]["dropped_contaminated"] == 1
    mmlu_rows = sum(len(list(csv.DictReader(f.open(newline="")))) for f in (small_routing / "mmlu").glob("*.csv"))
    assert mmlu["data"]["prompts"] + mmlu["data"]["dropped_contaminated"] == mmlu_rows
    for block in (gsm8k, mmlu):
        rows = {row["router"]: row for row in block["routers"]}
        assert rows["random"]["apgr"] == pytest.approx(0.5, abs=1e-6)
        assert rows["oracle"]["apgr"] > 1.0
        assert 0.0 < rows["skiff"]["apgr"] < rows["oracle"]["apgr"]
        assert 0.0 <= rows["skiff"]["cpt20"] <= rows["skiff"]["cpt50"] <= rows["skiff"]["cpt80"] <= 1.0
        assert len(rows["skiff"]["curve"]) == 21 and rows["skiff"]["curve"][0]["strong_share"] == 0
    # The second run reads the embedding cache and agrees exactly.
    again = json.loads(run_skiff("router", "eval", "--data", str(small_routing / "gsm8k_responses.csv"),
                                 "--json").stdout)
    skiff_row = next(row for row in gsm8k["routers"] if row["router"] == "skiff")
    assert again["blocks"][0]["routers"][0]["apgr"] == skiff_row["apgr"]


def test_router_eval_cascade_row_only_where_drafts_exist(skiff_home, small_routing):
    result = json.loads(run_skiff("router", "eval", "--draft-col", DRAFT_COLUMN, "--json",
                                  "--data", str(small_routing / "gsm8k_responses.csv"),
                                  "--data", str(small_routing / "mmlu")).stdout)
    gsm8k, mmlu = ({row["router"]: row for row in block["routers"]} for block in result["blocks"])
    cascade = gsm8k["skiff + local draft (cascade)"]
    assert 0.0 < cascade["apgr"] < gsm8k["oracle"]["apgr"] and cascade["apgr"] != gsm8k["skiff"]["apgr"]
    assert "skiff + local draft (cascade)" not in mmlu  # MMLU's tables hold no responses


def test_draft_features_check_the_drafts_arithmetic():
    from skiff.router.research.draft_features import DRAFT_FEATURES, draft_features

    right = dict(zip(DRAFT_FEATURES, draft_features("She has 16 - 3 = 13 eggs, 13 * 2 = 26. The answer is 26.")))
    wrong = dict(zip(DRAFT_FEATURES, draft_features("She has 16 - 3 = 12 eggs, 12 * 2 = 24. Let me check.")))
    assert right["wrong_equations"] == 0 and right["log_equations"] > 0 and right["final_answer_marker"] == 1
    assert wrong["wrong_equations"] == 1 and wrong["any_wrong_equation"] == 1 and wrong["second_thoughts"] == 1


def test_router_eval_plots_the_curves(skiff_home, small_routing, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "curves.png"
    run_skiff("router", "eval", "--data", str(small_routing / "gsm8k_responses.csv"), "--plot", str(plot))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


@pytest.mark.parametrize("protocol", ["transfer", "online"])
def test_router_eval_out_of_domain_protocols(skiff_home, small_routing, protocol):
    result = json.loads(run_skiff("router", "eval", "--protocol", protocol,
                                  "--data", str(small_routing / "gsm8k_responses.csv"),
                                  "--data", str(small_routing / "mmlu"), "--json").stdout)
    for block in result["blocks"]:
        assert block["protocol"] == protocol and "fitted on" in block["setup"]
        assert block["data"]["name"] not in block["setup"].split("fitted on ")[1].split(",")[0]


def test_router_eval_rejects_bad_tables_with_a_clear_error(skiff_home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,weak\nhello,True\n")
    result = run_skiff("router", "eval", "--data", str(bad), check=False)
    assert result.returncode == 2 and "missing column" in result.stderr


def test_the_shipped_prior_matches_its_recipe():
    """router/priors/README.md says how the prior was made; its data digests prove it."""
    from skiff.router.research.prior import prompts_digest
    from skiff.router.research.routing_data import load_routing_data
    from skiff.router.state import RouterState, shipped_prior_path

    if not ROUTING.is_dir():
        pytest.skip("../shared/data/routing is not beside the repository")
    meta = RouterState(ROUTING, shipped_prior_path()).prior().meta
    expected = {d["name"]: d for d in meta["datasets"]}
    for source in (ROUTING / "gsm8k_responses.csv", ROUTING / "mmlu"):
        data = load_routing_data(source)
        assert expected[data.name]["prompts"] == len(data)
        assert expected[data.name]["digest"] == prompts_digest(data.prompts)
    assert len(expected) == 2
    assert "RouteLLM" in meta["attribution"] and 0 < meta["weak_accuracy"] < meta["strong_accuracy"] < 1
