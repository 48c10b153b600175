"""The cascade's second stage with scripted parts: a local draft checked as it streams, escalated
to the cloud mid-stream when the local model is unsure (the draft kept), finished and marked unsure
when there is no cloud to ask, calibrated to a share of drafts, and taught by feedback."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from scripted import RouteAs, ScriptedEmbedder, ScriptedModel, cloud_answering

from skiff.router.draft_check import CHECK_AT, DraftFeatureMap
from skiff.router.surrogate import BayesianLinearRegression

CLOUD = {"cloud_base_url": "http://cloud.test/v1", "cloud_model": "big", "cloud_api_key": "sk-scripted-key-123"}
SURE, UNSURE = -0.05, -2.5  # a scripted draft's log-probability for every token
LONG = " ".join(f"w{n}" for n in range(60))  # longer than CHECK_AT tokens


def write_prior(path, n_calibration: int = 200):
    """A check whose confidence falls with the draft's −mean log-probability: 0.8 − 0.2·(−mean lp)."""
    feature_map = DraftFeatureMap.identity()
    mean = np.zeros(feature_map.dim)
    for with_notes in (True, False):
        mean[feature_map.weight_of("-mean logprob", with_notes)] = -0.2
    mean[-1] = 0.8
    model = BayesianLinearRegression(mean, np.eye(feature_map.dim) * 1e-3, 0.2,
                                     meta={"features": feature_map.as_meta()})
    rng = np.random.default_rng(0)
    calibration = np.zeros((n_calibration, feature_map.dim))
    calibration[:, feature_map.weight_of("-mean logprob")] = rng.uniform(0, 3, n_calibration)
    calibration[:, -1] = 1.0
    model.save(path, calibration_features=calibration, calibration_drafts=np.arange(n_calibration))
    return path


def assistant_with(tmp_path, answers, logprobs, cloud=None, route="local", **settings):
    from skiff.assistant import Assistant
    from skiff.cloud import CloudClient
    from skiff.config import load_settings

    prior = write_prior(tmp_path / "check-prior.npz")
    loaded = load_settings(abstain=False, draft_check_prior=prior, cloud_share=0.25, cloud_share_before_draft=0.0,
                           local_plus_share=0.0, **settings)

    def opener(s):
        return CloudClient(s.cloud_base_url, s.cloud_model, s.cloud_key(), transport=cloud, retries=0)

    model = ScriptedModel(tmp_path / "scripted.gguf", answers, logprobs=logprobs)
    return Assistant(loaded, RouteAs(route), model=model, embedder=ScriptedEmbedder(), open_cloud_client=opener)


def distrust_whole_drafts(prior):
    """The prior, changed so that the final reading (the whole draft) trusts a draft much less."""
    model = BayesianLinearRegression.load(prior)
    model.mean[-2] = -0.6  # the weight of "this reading covers the whole draft"
    with np.load(prior) as shipped:
        model.save(prior, calibration_features=shipped["calibration_features"],
                   calibration_drafts=shipped["calibration_drafts"])


def trust_whole_drafts(prior):
    """The prior, changed so that the final reading (the whole draft) trusts a draft much more."""
    model = BayesianLinearRegression.load(prior)
    model.mean[-2] = 0.6
    with np.load(prior) as shipped:
        model.save(prior, calibration_features=shipped["calibration_features"],
                   calibration_drafts=shipped["calibration_drafts"])


def with_a_note(assistant):
    """Every question finds one note chunk (an answer from notes gets the check's early reading)."""
    from skiff.local.notes_index import Hit
    from skiff.router.policy import QuestionWithNotes

    hit = Hit("n1", "A sail is a sheet of fabric that catches the wind.", "/notes/Sail.md", "Sail", "", 1, 1, None,
              False, 0.2)

    def consult(question, k=None, use_notes=True):
        return QuestionWithNotes(question, assistant.embedder.encode_query(question), [hit], 0.3)

    assistant.consult_notes = consult
    return assistant


def decision_row(answer_id: str) -> dict:
    from skiff.config import load_settings

    with sqlite3.connect(load_settings().database_path) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT d.draft_check, d.draft_model, a.draft, a.answered_by FROM decisions d "
                               "JOIN answers a ON a.id = d.answer_id WHERE d.answer_id=?", (answer_id,)).fetchone())


def test_a_confident_draft_stays_local_and_its_check_is_recorded(skiff_home, tmp_path):
    assistant = assistant_with(tmp_path, [LONG], [SURE], cloud_answering(["never"]), **CLOUD)
    answer = assistant.ask("What is a sail?", use_notes=False)
    assert answer.answered_by == "local" and answer.text == LONG and answer.draft is None
    check = answer.draft_check
    assert check["unsure"] is False and check["confidence"] > check["threshold"]
    assert (check["stage"], check["at_tokens"]) == ("final", 60) and "confident" in check["reason"]
    row = decision_row(answer.id)
    assert json.loads(row["draft_check"])["confidence"] == check["confidence"]
    assert row["draft_model"] == "scripted.gguf"


def test_an_unsure_draft_escalates_mid_stream_and_is_kept_folded(skiff_home, tmp_path):
    cloud = cloud_answering(["The cloud ", "answers."])
    assistant = with_a_note(assistant_with(tmp_path, [LONG], [UNSURE], cloud, **CLOUD))
    shown: list[str] = []
    set_aside: list[tuple[str, str]] = []
    answer = assistant.ask("What is a sail?", on_token=shown.append,
                           on_set_aside=lambda reason: set_aside.append(("".join(shown), reason)))
    draft = " ".join(LONG.split()[:CHECK_AT])
    assert answer.answered_by == "cloud" and answer.text == "The cloud answers."
    assert answer.draft == draft  # stopped at the check, not written to the end
    assert set_aside and set_aside[0][0] == draft
    reason = set_aside[0][1]
    assert reason.startswith("the local model is unsure (0.30 < τ") and reason.endswith(": asking the cloud")
    assert reason in answer.notices
    assert answer.draft_check["escalated"] and answer.draft_check["unsure"]
    assert (answer.draft_check["stage"], answer.draft_check["at_tokens"]) == ("early", CHECK_AT)
    row = decision_row(answer.id)
    assert row["draft"] == draft and json.loads(row["draft_check"])["escalated"] is True


def test_offline_an_unsure_draft_is_finished_and_marked_unsure(skiff_home, tmp_path):
    assistant = assistant_with(tmp_path, [LONG], [UNSURE], offline=True, **CLOUD)
    answer = assistant.ask("What is a sail?", use_notes=False)
    assert answer.answered_by == "local" and answer.text == LONG and answer.draft is None
    assert answer.draft_check["unsure"] and not answer.draft_check["escalated"]
    marked = [n for n in answer.notices if n.startswith("the local model is unsure of this answer")]
    assert marked and "(confidence 0.30 < τ" in marked[0] and "offline mode" in marked[0]


def test_asked_for_by_name_the_local_model_is_never_escalated(skiff_home, tmp_path):
    assistant = assistant_with(tmp_path, [LONG], [UNSURE], cloud_answering(["never"]), route="cloud", **CLOUD)
    answer = assistant.ask("What is a sail?", use_notes=False, route="local")
    assert answer.answered_by == "local" and answer.text == LONG
    assert any("you asked for the local model" in n for n in answer.notices)


def test_the_local_model_asked_for_stays_even_when_the_router_agreed_and_in_a_comparison(skiff_home, tmp_path):
    assistant = assistant_with(tmp_path, [LONG, LONG], [UNSURE, UNSURE], cloud_answering(["Cloud.", "Cloud."]),
                               route="local", **CLOUD)
    answer = assistant.ask("What is a sail?", use_notes=False, route="local")
    assert answer.answered_by == "local" and answer.text == LONG and not answer.decision.overridden
    assert any("you asked for the local model" in n for n in answer.notices)
    local, cloud = assistant.compare("What is a sail?", use_notes=False)
    assert (local.answered_by, local.text, cloud.answered_by) == ("local", LONG, "cloud")


def test_when_the_cloud_fails_after_an_escalation_the_local_answer_is_written_in_full(skiff_home, tmp_path):
    assistant = with_a_note(assistant_with(tmp_path, [LONG, LONG], [UNSURE, UNSURE], cloud_answering(None, 500),
                                           **CLOUD))
    set_aside: list[str] = []
    answer = assistant.ask("What is a sail?", on_set_aside=set_aside.append)
    assert answer.answered_by == "local" and answer.text == LONG  # written in full after all
    assert set_aside and any("answered locally" in n for n in answer.notices)
    assert answer.draft_check["escalated"] and answer.draft_check["stage"] == "early"


def test_a_draft_shorter_than_the_check_is_judged_at_its_end(skiff_home, tmp_path):
    cloud = cloud_answering(["Cloud."])
    assistant = assistant_with(tmp_path, ["Too short."], [UNSURE], cloud, **CLOUD)
    answer = assistant.ask("What is a sail?", use_notes=False)
    assert answer.answered_by == "cloud" and answer.draft == "Too short."
    assert (answer.draft_check["stage"], answer.draft_check["at_tokens"]) == ("final", 2)


def test_a_general_answer_is_judged_on_the_whole_draft(skiff_home, tmp_path):
    """An answer without notes (a worked solution states its result at the end) is read once, when
    finished, even when it would have looked sure after 32 tokens; escalated, it is kept folded."""
    long = " ".join(f"w{n}" for n in range(300))
    assistant = assistant_with(tmp_path, [long], [SURE], cloud_answering(["Cloud."]), **CLOUD)
    distrust_whole_drafts(tmp_path / "check-prior.npz")
    answer = assistant.ask("What is a sail?", use_notes=False)
    check = answer.draft_check
    assert answer.answered_by == "cloud" and answer.draft == long
    assert (check["stage"], check["at_tokens"], check["escalated"]) == ("final", 300, True)
    assert len(assistant.records.draft_features(answer.id, "scripted.gguf")) == 1  # one reading


def test_an_answer_from_notes_sure_at_first_and_unsure_by_its_end_escalates_after_it(skiff_home, tmp_path):
    long = " ".join(f"w{n}" for n in range(300))
    assistant = with_a_note(assistant_with(tmp_path, [long], [SURE], cloud_answering(["Cloud."]), **CLOUD))
    distrust_whole_drafts(tmp_path / "check-prior.npz")
    answer = assistant.ask("What is a sail?")
    check = answer.draft_check
    assert answer.answered_by == "cloud" and answer.draft == long
    assert (check["stage"], check["escalated"]) == ("final", True)
    assert len(assistant.records.draft_features(answer.id, "scripted.gguf")) == 2  # early, then final


def test_a_draft_unsure_at_first_stays_unsure_when_it_runs_on_to_a_surer_end(skiff_home, tmp_path):
    """τ is calibrated on each draft's lowest reading, so a draft that runs on past an unsure
    early reading (here the local model was asked for by name) is judged by that reading."""
    assistant = with_a_note(assistant_with(tmp_path, [LONG], [UNSURE], cloud_answering(["never"]), **CLOUD))
    trust_whole_drafts(tmp_path / "check-prior.npz")
    answer = assistant.ask("What is a sail?", route="local")
    check = answer.draft_check
    assert answer.answered_by == "local" and answer.text == LONG  # written in full, not escalated
    assert check["unsure"] and (check["stage"], check["at_tokens"]) == ("early", CHECK_AT)
    assert any(n.startswith("the local model is unsure of this answer") for n in answer.notices)
    assert len(assistant.records.draft_features(answer.id, "scripted.gguf")) == 2  # both readings kept


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_the_check_is_calibrated_to_the_share_of_drafts_asked_for(skiff_home, tmp_path, share):
    from skiff.router.draft_check import DraftCheck

    check = DraftCheck(tmp_path / "router", "scripted.gguf", write_prior(tmp_path / "prior.npz", 400))
    threshold = check.calibrate(share, np.zeros((0, 0)), checked=0)
    confidences = check.lowest_confidence(check.shipped_drafts())
    assert abs(float(np.mean(confidences < threshold.threshold)) - share) <= 0.01
    assert "shipped" in threshold.calibrated_on
    # Once a person has drafts of their own, τ follows theirs; a draft read twice counts by its
    # lower reading.
    scale = np.r_[np.full(check.feature_map().dim - 1, 0.5), 1.0]
    own = [np.vstack([draft * scale, draft * scale * 1.5]) for draft in check.shipped_drafts()[:50]]
    mine = check.calibrate(share, own, checked=50)
    assert mine.calibrated_on == "your 50 most recent drafts"
    assert abs(float(np.mean(check.lowest_confidence(own) < mine.threshold)) - share) <= 0.03


def test_feedback_on_local_answers_moves_later_checks(skiff_home, tmp_path):
    assistant = assistant_with(tmp_path, [LONG] * 9, [SURE] * 9)
    first = assistant.ask("What is a sail?", use_notes=False)
    for _ in range(8):
        answer = assistant.ask("What is a sail?", use_notes=False)
        assistant.feedback("bad", answer.id)
    check = assistant.draft_check()
    assert check.surrogate().observations == 8
    later = check.judge([SURE] * 60, [-SURE] * 60, ["w"] * 60, None, whole=True)
    assert later.confidence < first.draft_check["confidence"] - 0.1
    # Changing one's mind takes the observation back, exactly.
    before = check.surrogate().mean.copy()
    assistant.feedback("good", answer.id)
    assistant.feedback("bad", answer.id)
    np.testing.assert_allclose(check.surrogate().mean, before, atol=1e-9)


def test_a_verdict_on_a_draft_read_by_an_older_checks_signals_is_skipped_not_misapplied(skiff_home, tmp_path):
    from skiff.router.draft_check import pack

    assistant = assistant_with(tmp_path, [LONG] * 2, [SURE] * 2)
    old = assistant.ask("What is a sail?", use_notes=False)
    # As if this draft had been read before an upgrade changed ψ (one weight per signal, fewer of them).
    assistant.records.db.execute("UPDATE decisions SET draft_features=? WHERE answer_id=?",
                                 (pack([np.ones(12)]), old.id))
    assistant.records.db.commit()
    assistant.feedback("bad", old.id)
    assert assistant.draft_check().surrogate().observations == 0
    new = assistant.ask("What is a sail?", use_notes=False)
    assistant.feedback("bad", new.id)
    assert assistant.draft_check().surrogate().observations == 1


def test_a_signal_that_never_varied_in_the_fit_stays_on_its_raw_scale():
    finished = [{"-mean logprob": value, "cut off at the token limit": 0.0} for value in (0.2, 0.4, 0.6)]
    feature_map = DraftFeatureMap.fitted(finished, finished)
    cut_short = feature_map({"-mean logprob": 0.4, "cut off at the token limit": 1.0}, True, True)
    assert cut_short[feature_map.weight_of("cut off at the token limit")] == 1.0  # not 1 / 0


def test_answers_from_notes_and_general_answers_weigh_their_token_signals_apart():
    feature_map = DraftFeatureMap.identity()
    signals = {"-mean logprob": 1.5, "cites no source": 1.0}
    from_notes, general = feature_map(signals, True, True), feature_map(signals, False, True)
    notes_weight, general_weight = (feature_map.weight_of("-mean logprob", regime) for regime in (True, False))
    assert (from_notes[notes_weight], from_notes[general_weight]) == (1.5, 0.0)
    assert (general[notes_weight], general[general_weight]) == (0.0, 1.5)
    assert from_notes[feature_map.weight_of("cites no source")] == 1.0
    assert general[feature_map.weight_of("cites no source")] == 0.0  # no notes, nothing to cite


def test_router_stats_say_how_many_went_out_before_and_after_a_draft(skiff_home, tmp_path):
    from rich.console import Console

    from skiff.app.render import router_stats_table
    from skiff.router.calibration import router_stats
    from skiff.router.uncertainty import UncertaintyRouter

    cloud = cloud_answering(["Cloud."])
    assistant = assistant_with(tmp_path, [LONG, LONG, LONG], [UNSURE, SURE, SURE], cloud, **CLOUD)
    for _ in range(2):
        assistant.ask("What is a sail?", use_notes=False)
    assistant.ask("What is a sail?", use_notes=False, route="cloud")
    stats = router_stats(assistant.records, UncertaintyRouter(assistant.router_state), None, assistant.draft_check())
    stages = stats["stages"]
    assert (stages["before_draft"], stages["after_draft"], stages["drafts_checked"]) == (1, 1, 2)
    assert stages["after_draft_share"] == round(1 / 3, 4)
    assert stats["draft_check"]["model"] == "scripted.gguf" and stats["draft_check"]["threshold"] is not None
    console = Console(width=200, record=True)
    console.print(router_stats_table(stats))
    shown = console.export_text()
    assert "before a draft 1 (33%), after a draft 1 (33%); 2 drafts checked" in shown
    assert "draft check" in shown and "escalate below τ" in shown


def test_thresholds_set_before_the_cascade_are_recalibrated_so_the_check_has_drafts_to_flag(skiff_home, tmp_path):
    from skiff.router.calibration import keep_calibrated
    from skiff.router.state import Thresholds
    from skiff.router.uncertainty import UncertaintyRouter

    assistant = assistant_with(tmp_path, [LONG], [SURE])
    state = assistant.router_state
    # As written by a skiff without the cascade: all of the cloud share before any draft.
    state.save_thresholds(Thresholds(0.4, 0.38, 0.2, 0.2, "an older skiff"))
    assert state.thresholds().drafts_to_escalate == 0.0  # the check would never flag a draft
    router = UncertaintyRouter(state, cloud_share=0.2, local_plus_share=0.2, before_draft_share=0.05)
    assert keep_calibrated(assistant.records, router, ScriptedEmbedder().encode) is not None
    assert state.thresholds().before_draft_share == 0.05 and state.thresholds().drafts_to_escalate > 0.2
    assert keep_calibrated(assistant.records, router, ScriptedEmbedder().encode) is None  # settled
    # Turning the check off moves all of the share before a draft again.
    off = UncertaintyRouter(state, cloud_share=0.2, local_plus_share=0.2, before_draft_share=None)
    assert keep_calibrated(assistant.records, off, ScriptedEmbedder().encode) is not None
    assert state.thresholds().before_draft_share is None
