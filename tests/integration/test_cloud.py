"""The cloud path against real servers on loopback: llama.cpp's OpenAI-compatible server for the
normal stream and escalation end to end, and a misbehaving server of our own for the faults.
No httpx mocking anywhere."""

from __future__ import annotations

import json
import os
import secrets
import stat
import time

import pytest

from conftest import run_skiff
from servers import FaultServer, LlamaServer
from skiff.cloud import (
    CloudClient,
    CloudRefused,
    CloudStats,
    CloudStreamBroken,
    CloudTimeout,
    CloudTimeouts,
    CloudUnavailable,
)

QUESTION = [{"role": "user", "content": "What is six times seven?"}]


@pytest.fixture(scope="module")
def faults():
    server = FaultServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def llama_server():
    from skiff.local.assets import bundled_gguf_path

    server = LlamaServer(bundled_gguf_path(), api_key="sk-test-" + secrets.token_hex(12))
    yield server
    server.stop()


def client_for(url: str, key: str = "sk-fault-secret-123", **kwargs) -> CloudClient:
    kwargs.setdefault("backoff_s", 0.01)
    return CloudClient(url, "fault-model", key, **kwargs)


# -- the client against faults ------------------------------------------------------------------


def test_a_normal_stream_yields_every_piece(faults):
    stats = CloudStats()
    with client_for(faults.url("ok")) as client:
        assert "".join(client.stream_chat(QUESTION, stats=stats)) == "The answer is 42."
    assert stats.finish_reason == "stop" and stats.attempts == 1
    assert stats.completion_tokens == 4 and not stats.usage_reported  # counted, labelled as such
    assert faults.auth_headers[-1] == "Bearer sk-fault-secret-123"
    assert faults.bodies[-1]["stream"] is True and faults.bodies[-1]["model"] == "fault-model"


def test_429_then_success_is_retried_before_the_first_token(faults):
    stats = CloudStats()
    with client_for(faults.url("429_then_ok")) as client:
        assert "".join(client.stream_chat(QUESTION, stats=stats)) == "The answer is 42."
    assert stats.attempts == 2 and faults.requests["429_then_ok"] == 2


def test_persistent_500_gives_up_after_the_retries(faults):
    with client_for(faults.url("always500"), retries=2) as client:
        with pytest.raises(CloudUnavailable, match="500.*after 3 tries"):
            list(client.stream_chat(QUESTION))
    assert faults.requests["always500"] == 3


def test_an_unreachable_endpoint_is_unavailable_not_a_crash():
    with client_for("http://127.0.0.1:9/v1", retries=1) as client:
        with pytest.raises(CloudUnavailable, match="could not reach"):
            list(client.stream_chat(QUESTION))


@pytest.mark.parametrize("status, advice", [(401, "SKIFF_CLOUD_API_KEY"), (403, "permissions"), (404, "ends in /v1")])
def test_refusals_say_what_to_fix_and_are_not_retried(faults, status, advice):
    scenario = f"refuse{status}"
    with client_for(faults.url(scenario)) as client:
        with pytest.raises(CloudRefused) as caught:
            list(client.stream_chat(QUESTION))
    assert caught.value.status == status and advice in str(caught.value)
    assert faults.requests[scenario] == 1


def test_a_server_echoing_the_key_never_gets_it_into_an_error(faults):
    key = "sk-live-" + secrets.token_hex(16)
    with client_for(faults.url("echo_key"), key=key) as client:
        with pytest.raises(CloudRefused) as caught:
            list(client.stream_chat(QUESTION))
    assert "bad header" in str(caught.value) and key not in str(caught.value)


@pytest.mark.parametrize("scenario", ["drop", "malformed", "error_event", "no_done"])
def test_a_stream_broken_mid_answer_keeps_what_was_shown(faults, scenario):
    shown: list[str] = []
    with client_for(faults.url(scenario)) as client:
        with pytest.raises(CloudStreamBroken) as caught:
            for piece in client.stream_chat(QUESTION):
                shown.append(piece)
    assert "".join(shown) == "The answer " and caught.value.partial
    if scenario == "error_event":
        assert "model overloaded" in str(caught.value)


@pytest.mark.parametrize("scenario", ["slow_first", "pings", "hang"])
def test_a_first_token_that_never_comes_times_out(faults, scenario):
    faults.hang_s = 3.0
    started = time.monotonic()
    with client_for(faults.url(scenario), timeouts=CloudTimeouts(connect=1, first_token=0.8, total=10)) as client:
        with pytest.raises(CloudTimeout, match="first-token timeout"):
            list(client.stream_chat(QUESTION))
    # Keep-alive pings do not keep a silent server alive; no retry doubles the wait.
    assert time.monotonic() - started < 2.5
    assert faults.requests[scenario] == 1


def test_cancel_stops_the_stream(faults):
    stats = CloudStats()
    shown: list[str] = []
    with client_for(faults.url("ok")) as client:
        for piece in client.stream_chat(QUESTION, stats=stats, should_stop=lambda: len(shown) >= 1):
            shown.append(piece)
    assert shown == ["The "] and stats.finish_reason == "cancelled"


# -- the client against llama.cpp's real server -------------------------------------------------


def test_llama_server_streams_and_checks(llama_server):
    with CloudClient(llama_server.base_url, "smollm2", llama_server.api_key) as client:
        reach = client.check()
        assert reach.ok and reach.models == ["smollm2"]
        stats = CloudStats()
        text = "".join(client.stream_chat(QUESTION, max_tokens=24, stats=stats))
    assert text.strip() and stats.finish_reason in ("stop", "length") and stats.first_token_s is not None
    with CloudClient(llama_server.base_url, "smollm2", "sk-wrong-key-000") as wrong:
        assert not wrong.check().ok
        with pytest.raises(CloudRefused) as caught:
            list(wrong.stream_chat(QUESTION, max_tokens=4))
    assert caught.value.status == 401 and "sk-wrong-key-000" not in str(caught.value)


# -- escalation through the assistant ----------------------------------------------------------


def cloud_assistant(skiff_home, base_url: str, **settings):
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    return Assistant(load_settings(cloud_base_url=base_url, cloud_model=settings.pop("cloud_model", "smollm2"),
                                   max_tokens=24, cloud_max_tokens=24, **settings))


def test_escalation_end_to_end_streams_the_cloud_answer_and_keeps_private_notes(skiff_home, vault, llama_server,
                                                                                  monkeypatch):
    private_note = vault / "Plugins" / "Diary.md"
    private_note.write_text("---\nprivate: true\n---\n# Diary\n\nMy daily notes plugin password hint is the "
                            "name of my first cat.\n", encoding="utf-8")
    monkeypatch.setenv("SKIFF_CLOUD_API_KEY", llama_server.api_key)
    assistant = cloud_assistant(skiff_home, llama_server.base_url, cloud_price_in_per_mtok=1.0,
                                cloud_price_out_per_mtok=2.0, cloud_share_before_draft=1.0)
    try:
        assistant.index([vault])
        # Every question is hard, and goes out before any draft: the router itself escalates.
        assistant.calibrate(cloud_share=1.0, local_plus_share=0.0)
        question = "What is the password hint in my diary for the daily notes plugin?"
        assert any(hit.private for hit in assistant.retrieve(question))  # the private note is relevant
        pieces: list[str] = []
        answer = assistant.ask(question, on_token=pieces.append)
        assert answer.route == "cloud" and not answer.decision.overridden
        assert answer.answered_by == "cloud" and answer.model == "smollm2"
        assert answer.text and "".join(pieces) == answer.text
        assert answer.cost_usd is not None and answer.cost_usd > 0 and answer.tokens.get("estimated") is True
        record = assistant.answer_record(answer.id)
        sent = record["sent"]
        assert sent["endpoint"] == llama_server.base_url
        sent_text = json.dumps(sent["messages"])
        assert "first cat" not in sent_text and "Diary" not in json.dumps(sent["notes"])
        assert sent["private_notes_withheld"] >= 1 and any("private" in n for n in answer.notices)
        assert record["answered_by"] == "cloud" and record["cost_usd"] == answer.cost_usd
        spend = assistant.router_stats()["cloud_spend"]
        assert spend["answers"] == 1 and spend["usd"] == pytest.approx(answer.cost_usd)
    finally:
        assistant.close()


def test_an_unsure_draft_escalates_to_a_real_cloud_mid_stream_and_is_kept(skiff_home, vault, llama_server,
                                                                          monkeypatch):
    """The cascade end to end on real engines: the local model drafts from notes, the shipped draft
    check for it reads the draft's token confidence, and with τ above every confidence (a cloud
    share of 1, none of it before a draft) the draft stops at the early reading and the cloud
    answers below it."""
    from skiff.assistant import Assistant
    from skiff.config import load_settings
    from skiff.router.draft_check import CHECK_AT

    monkeypatch.setenv("SKIFF_CLOUD_API_KEY", llama_server.api_key)
    assistant = Assistant(load_settings(cloud_base_url=llama_server.base_url, cloud_model="smollm2", max_tokens=96,
                                        cloud_max_tokens=24, cloud_share_before_draft=0.0))
    try:
        assistant.index([vault])
        assistant.calibrate(cloud_share=1.0, local_plus_share=0.0)
        shown: list[str] = []
        set_aside: list[tuple[str, str]] = []
        answer = assistant.ask("Write a long story about a lighthouse keeper and the sea.", on_token=shown.append,
                               on_set_aside=lambda reason: set_aside.append(("".join(shown), reason)))
        assert answer.route == "local" and answer.answered_by == "cloud" and answer.model == "smollm2"
        assert answer.sources  # an answer from notes: read early
        check = answer.draft_check
        assert check["escalated"] and check["unsure"] and (check["stage"], check["at_tokens"]) == ("early", CHECK_AT)
        assert set_aside and set_aside[0][0] == answer.draft and answer.draft.strip()
        assert set_aside[0][1] == f"{check['reason']}: asking the cloud"
        assert "".join(shown) == answer.draft + answer.text  # the draft, then the cloud's answer below it
        record = assistant.answer_record(answer.id)
        assert record["draft"] == answer.draft and record["draft_check"]["escalated"] is True
        stages = assistant.router_stats()["stages"]
        assert (stages["before_draft"], stages["after_draft"], stages["drafts_checked"]) == (0, 1, 1)
    finally:
        assistant.close()


def test_offline_an_unsure_real_draft_is_kept_and_marked(skiff_home, faults):
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    assistant = Assistant(load_settings(cloud_base_url=faults.url("ok"), cloud_model="fault-model", offline=True,
                                        max_tokens=48, cloud_share_before_draft=0.0))
    try:
        assistant.calibrate(cloud_share=1.0, local_plus_share=0.0)  # τ above every confidence
        before = sum(faults.requests.values())
        answer = assistant.ask("Write a long story about a lighthouse keeper and the sea.", use_notes=False)
        assert answer.answered_by == "local" and answer.draft is None and answer.text.strip()
        check = answer.draft_check
        assert check["unsure"] and not check["escalated"] and check["stage"] == "final"
        assert any(n.startswith("the local model is unsure of this answer") and "offline mode" in n
                   for n in answer.notices)
        assert sum(faults.requests.values()) == before  # offline: the endpoint was never asked
    finally:
        assistant.close()


async def test_the_tui_folds_an_unsure_draft_and_shows_the_cloud_answer(skiff_home, llama_server, monkeypatch):
    from skiff.app.tui.app import SkiffApp

    monkeypatch.setenv("SKIFF_CLOUD_API_KEY", llama_server.api_key)
    app = SkiffApp(max_tokens=96, cloud_max_tokens=24, cloud_base_url=llama_server.base_url, cloud_model="smollm2",
                   cloud_share=1.0, local_plus_share=0.0, cloud_share_before_draft=0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        box = app.query_one("ChatInput")
        box.load_text("Write a long story about a lighthouse keeper and the sea.")
        box.move_cursor(box.document.end)
        await pilot.press("enter")
        deadline = time.monotonic() + 300
        while not (not app.answering and app.views and app.views[-1].answer_id):
            assert time.monotonic() < deadline, "timed out waiting for the answer"
            await pilot.pause(0.1)
        view = app.views[-1]
        answer = view.answer
        assert answer.answered_by == "cloud" and answer.draft and view.text == answer.text
        folded = view.query(".draft")
        assert len(folded) == 1 and folded.first().title.startswith("draft set aside: the local model is unsure")
        assert "→ cloud" in view.badge.render().plain
        stored = app.history.messages(app.conversation_id)[-1]
        assert stored.content == answer.text


@pytest.mark.parametrize("scenario, expect", [("always500", "500"), ("refuse401", "API key was refused"),
                                              ("hang", "first-token timeout"), ("empty", "empty answer")])
def test_cloud_failure_before_the_first_token_falls_back_to_local(skiff_home, faults, scenario, expect):
    faults.hang_s = 2.0
    assistant = cloud_assistant(skiff_home, faults.url(scenario), cloud_model="fault-model", cloud_retries=1,
                                cloud_first_token_timeout_s=0.8)
    try:
        answer = assistant.ask("What is six times seven?", use_notes=False, route="cloud")
        assert answer.answered_by == "local" and answer.text
        assert any(expect in notice and "answered locally" in notice for notice in answer.notices)
        assert assistant.answer_record(answer.id)["answered_by"] == "local"
    finally:
        assistant.close()


def test_a_dropped_stream_keeps_the_partial_answer_and_offers_local(skiff_home, faults):
    assistant = cloud_assistant(skiff_home, faults.url("drop"), cloud_model="fault-model")
    try:
        answer = assistant.ask("What is six times seven?", use_notes=False, route="cloud")
        assert answer.answered_by == "cloud" and answer.text == "The answer "
        assert answer.stop_reason == "cloud_stream_broken" and answer.local_offered
        assert any("incomplete" in notice for notice in answer.notices)
        # Nothing shown is lost: the record holds the partial text.
        assert assistant.answer_record(answer.id)["answer"] == "The answer "
        local = assistant.ask("What is six times seven?", use_notes=False, route="local")
        assert local.pair_id == answer.id  # asked again locally: the two answers form a pair
    finally:
        assistant.close()


def test_offline_answers_locally_with_a_notice(skiff_home, faults):
    assistant = cloud_assistant(skiff_home, faults.url("ok"), cloud_model="fault-model", offline=True)
    try:
        before = sum(faults.requests.values())
        answer = assistant.ask("What is six times seven?", use_notes=False, route="cloud")
        assert answer.answered_by == "local" and any("offline" in n for n in answer.notices)
        assert sum(faults.requests.values()) == before
        assert assistant.answer_record(answer.id)["sent"] is None
    finally:
        assistant.close()


def test_private_notes_by_front_matter_folder_or_glob(tmp_path):
    from skiff.local.notes_index import Hit
    from skiff.assistant.privacy import is_private

    def hit(path: str, private: bool = False) -> Hit:
        return Hit("id", "text", path, "t", "", 1, 1, None, private, 0.1)

    rules = [str(tmp_path / "journal"), "*.secret.md", "~/health/*"]
    assert is_private(hit(str(tmp_path / "notes" / "a.md"), private=True), rules)
    assert is_private(hit(str(tmp_path / "journal" / "2026" / "day.md")), rules)
    assert is_private(hit(str(tmp_path / "plans.secret.md")), rules)
    assert is_private(hit(os.path.expanduser("~/health/blood.md")), rules)
    assert not is_private(hit(str(tmp_path / "journalism" / "a.md")), rules)  # a folder, not a prefix
    assert not is_private(hit(str(tmp_path / "notes" / "a.md")), rules)


# -- pairs teach the router the gap exactly ----------------------------------------------------


def test_compare_pairs_and_judging_both_teaches_the_exact_gap(skiff_home, faults):
    assistant = cloud_assistant(skiff_home, faults.url("ok"), cloud_model="fault-model")
    try:
        local, cloud = assistant.compare("What is six times seven?", use_notes=False)
        assert (local.answered_by, cloud.answered_by) == ("local", "cloud")
        assert local.pair_id == cloud.pair_id == local.id
        surrogate = assistant.router_state.surrogate
        first = assistant.feedback("good", cloud.id)
        assert first.target == pytest.approx(
            1 - surrogate().meta["weak_accuracy"], abs=1e-4
        )  # one side: an expectation
        assert surrogate().observations == 1
        second = assistant.feedback("bad", local.id)
        assert second.target == 1.0 and "exactly" in second.message
        assert surrogate().observations == 1  # the pair replaced the one-sided observation
        prediction_after_gap = surrogate().predict(assistant.records.features(cloud.id)).mean
        third = assistant.feedback("good", local.id)  # both good: the gap is 0
        assert third.target == 0.0 and surrogate().observations == 1
        assert surrogate().predict(assistant.records.features(cloud.id)).mean < prediction_after_gap
        assert assistant.records.feedback_counts() == {"good": 2, "bad": 0}
    finally:
        assistant.close()


def test_cli_compare_prints_both_answers_and_pairs_them(skiff_home, faults):
    env = {**os.environ, "SKIFF_CLOUD_BASE_URL": faults.url("ok"), "SKIFF_CLOUD_MODEL": "fault-model",
           "SKIFF_MAX_TOKENS": "12"}
    shown = run_skiff("ask", "--compare", "--no-notes", "What is six times seven?", env=env)
    assert "── local ──" in shown.stdout and "── cloud ──\nThe answer is 42." in shown.stdout
    assert "skiff feedback good|bad" in shown.stderr
    local, cloud = json.loads(run_skiff("ask", "--compare", "--json", "--no-notes", "Name a prime.", env=env).stdout)
    assert (local["answered_by"], cloud["answered_by"]) == ("local", "cloud")
    assert local["pair_id"] == cloud["pair_id"] == local["id"]
    record = json.loads(run_skiff("show", "--json", cloud["id"], env=env).stdout)
    assert record["sent"]["messages"][-1]["content"] == "Name a prime."


def test_calibrating_by_budget_uses_the_recorded_cost_and_question_rate(skiff_home, faults):
    assistant = cloud_assistant(skiff_home, faults.url("ok"), cloud_model="fault-model",
                                cloud_price_in_per_mtok=100.0, cloud_price_out_per_mtok=300.0)
    try:
        with pytest.raises(ValueError, match="no priced cloud answers"):
            assistant.calibrate(budget_usd=1.0)
        answers = [assistant.ask(f"What is {n} times seven?", use_notes=False, route="cloud") for n in range(3)]
        mean_cost = sum(a.cost_usd for a in answers) / 3
        assert all(a.answered_by == "cloud" and a.cost_usd > 0 for a in answers)
        # Three questions within a day project to 90 a month; this budget affords a quarter of them.
        budget = 0.25 * 90 * mean_cost
        share, how = assistant.budget_share(budget)
        assert share == pytest.approx(0.25, rel=1e-6) and "25%" in how
        thresholds = assistant.calibrate(budget_usd=budget)
        assert thresholds.cloud_share == pytest.approx(0.25, rel=1e-6)
        stats = assistant.router_stats()["cloud_spend"]
        assert stats["answers"] == 3 and stats["usd"] == pytest.approx(3 * mean_cost, rel=1e-4)
    finally:
        assistant.close()


# -- keys and secrets --------------------------------------------------------------------------


def test_key_file_is_private_and_an_open_one_is_refused(skiff_home):
    from skiff.config.settings import KeyFileError, load_settings, write_key_file

    settings = load_settings()
    path = write_key_file(settings.cloud_api_key_file, "sk-file-" + secrets.token_hex(8))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings.cloud_key().startswith("sk-file-")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        settings.cloud_key()


def test_the_key_never_reaches_output_history_or_errors(skiff_home, llama_server, faults):
    key = llama_server.api_key
    env = {**os.environ, "SKIFF_CLOUD_BASE_URL": llama_server.base_url, "SKIFF_CLOUD_MODEL": "smollm2",
           "SKIFF_MAX_TOKENS": "16", "SKIFF_CLOUD_MAX_TOKENS": "16"}
    run_skiff("cloud", "key", env=env, input=key + "\n")
    outputs = [
        run_skiff("cloud", "check", env=env),
        run_skiff("ask", "--route", "cloud", "--no-notes", "What is six times seven?", env=env),
        run_skiff("ask", "--json", "--route", "cloud", "--no-notes", "Name a prime number.", env=env),
        run_skiff("config", env=env), run_skiff("status", env=env), run_skiff("show", "--json", env=env),
        run_skiff("router", "stats", env=env),
    ]
    wrong = {**env, "SKIFF_CLOUD_API_KEY": key[::-1], "SKIFF_CLOUD_BASE_URL": faults.url("echo_key")}
    outputs.append(run_skiff("ask", "--route", "cloud", "--no-notes", "What is six times seven?", env=wrong))
    outputs.append(run_skiff("cloud", "check", env=wrong, check=False))
    assert "reachable; serves smollm2" in outputs[0].stdout
    assert "cloud" in outputs[1].stderr and json.loads(outputs[2].stdout)["answered_by"] == "cloud"
    assert "bad header" in outputs[7].stderr  # the echoing server's error was shown, redacted
    for result in outputs:
        assert key not in result.stdout + result.stderr and key[::-1] not in result.stdout + result.stderr
    for path in (skiff_home / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert key.encode() not in data and key[::-1].encode() not in data, path
