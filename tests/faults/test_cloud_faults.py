"""Cloud faults, measured: every misbehaviour of the FaultServer (tests/servers.py), from a 500 to a
gzip bomb, against the real client over loopback HTTP, several trials each. Each must end within
its deadline or limit, with the error meant for it, the key in no message, nothing that was shown
lost, and the client's memory bounded: its peak traced by tracemalloc and the process's peak RSS
(/proc/self/status VmHWM, reset before each trial where the kernel allows).

Then the same faults through the Assistant: a stream cut off after text was shown keeps the text
and offers the local model; one that fails before any text falls back to local, saying why.

Timing on a loaded machine: the bounds are the deadline or limit that should end the fault plus
SLACK_S (SKIFF_FAULT_SLACK_S, default 3 s) of wall time, and a bound on the client thread's own
CPU time, which other processes do not inflate.
"""

from __future__ import annotations

import gc
import json
import os
import re
import secrets
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from servers import CLASSIC, HOSTILE, FaultServer, chunk, gzip_bomb
from skiff.cloud import (
    CloudBadResponse,
    CloudClient,
    CloudError,
    CloudRefused,
    CloudStats,
    CloudStreamBroken,
    CloudTimeout,
    CloudTimeouts,
    CloudUnavailable,
)

KEY = "sk-fault-" + secrets.token_hex(16)
QUESTION = [{"role": "user", "content": "What is six times seven?"}]
TIMEOUTS = CloudTimeouts(connect=1.0, first_token=1.0, total=3.0, idle=1.0)
SLACK_S = float(os.environ.get("SKIFF_FAULT_SLACK_S", "3.0"))
MIB = 1 << 20
RESULTS: list[str] = []


@pytest.fixture(scope="module")
def faults():
    server = FaultServer()
    server.hang_s = 3.0
    server.drip_s = 0.3
    server.forever_s = 20.0  # far past every bound below; an unbounded client still ends, and fails
    for kind in ("lines", "line", "json"):
        gzip_bomb(kind)  # built once, before anything is measured
    yield server
    server.stop()
    if RESULTS:
        sys.stdout.write("\n" + "\n".join(RESULTS) + "\n")


# -- measuring --------------------------------------------------------------------------------


def _status_kib(name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        return False
    return True


@dataclass
class Trial:
    shown: list[str] = field(default_factory=list)
    error: BaseException | None = None
    elapsed_s: float = 0.0
    cpu_s: float = 0.0  # the calling thread's CPU time: what the client itself spent
    traced_peak_mib: float = 0.0
    rss_growth_mib: float | None = None


def measure(body) -> Trial:
    """Runs body(trial) with tracemalloc on, timing it; any exception is kept, not raised."""
    trial = Trial()
    gc.collect()
    rss_ok = _reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    tracemalloc.start()
    started, cpu_started = time.perf_counter(), time.thread_time()
    try:
        body(trial)
    except Exception as error:  # noqa: BLE001 - the test judges it
        trial.error = error
    trial.elapsed_s = time.perf_counter() - started
    trial.cpu_s = time.thread_time() - cpu_started
    trial.traced_peak_mib = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    peak = _status_kib("VmHWM")
    if rss_ok and peak is not None and rss_before is not None:
        trial.rss_growth_mib = max(0, peak - rss_before) / 1024
    return trial


# -- the fault classes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    scenario: str
    error: type[BaseException] | None  # exactly this type; None: the whole answer arrives
    match: str = ""  # a regex the message must contain
    shown: str | None = "The answer "  # the text yielded before the end (None: checked by `pieces`)
    pieces: str | None = None  # every piece is this (the endless and drip token streams)
    ends_by_s: float = 0.0  # the deadline that should end it (0: a limit or an answer ends it first)
    cpu_s: float = 2.0  # most CPU seconds the client may spend on it
    peak_mib: float = 4.0  # most traced memory
    rss_mib: float = 48.0  # most growth of the process's peak RSS
    trials: int = 3
    url: str | None = None  # instead of the FaultServer's (the unreachable endpoint)


ANSWER = "The answer is 42."
FAULTS = [
    # The first ones (tests/test_cloud.py).
    Fault("ok", None, shown=ANSWER),
    Fault("429_then_ok", None, shown=ANSWER),
    Fault("always500", CloudUnavailable, r"answered 500.*after 3 tries", shown=""),
    Fault("refuse401", CloudRefused, "API key was refused", shown=""),
    Fault("refuse403", CloudRefused, "permissions", shown=""),
    Fault("refuse404", CloudRefused, "ends in /v1", shown=""),
    Fault("echo_key", CloudRefused, "bad header", shown=""),
    Fault("unreachable", CloudUnavailable, "could not reach", shown="", url="http://127.0.0.1:9/v1"),
    Fault("hang", CloudTimeout, "first-token timeout", shown="", ends_by_s=1.0, trials=2),
    Fault("pings", CloudTimeout, "first-token timeout", shown="", ends_by_s=1.0, trials=2),
    Fault("slow_first", CloudTimeout, "first-token timeout", shown="", ends_by_s=1.0, trials=2),
    Fault("drop", CloudStreamBroken, "dropped mid-answer"),
    Fault("malformed", CloudStreamBroken, "malformed event"),
    Fault("error_event", CloudStreamBroken, "model overloaded"),
    Fault("no_done", CloudStreamBroken, "ended before the answer finished"),
    # A model that stops at once: the client reads it whole; the pipeline falls back (test_cloud.py).
    Fault("empty", None, shown="  "),
    # Drips: each byte, token, ping or header restarts a read timeout; the deadlines do not restart.
    Fault("drip_head", CloudTimeout, "first-token timeout", shown="", ends_by_s=1.0, trials=2),
    Fault("drip_line", CloudStreamBroken, "idle timeout", ends_by_s=1.0, trials=2),
    Fault("drip_tokens", CloudStreamBroken, "total timeout", shown=None, pieces="tok ", ends_by_s=3.0, trials=2),
    Fault("drip_pings", CloudStreamBroken, "idle timeout", ends_by_s=1.0, trials=2),
    Fault("drip_headers", CloudTimeout, "first-token timeout", shown="", ends_by_s=1.0, trials=2),
    # Endless and huge: a limit ends them, long before any deadline.
    Fault("endless_headers", CloudUnavailable, r"broke off before answering.*after 3 tries", shown=""),
    Fault("endless_tokens", CloudBadResponse, r"more than the 512 tokens asked for.*chars_per_token", shown=None,
          pieces="tok ", cpu_s=6.0),
    Fault("endless_pings", CloudBadResponse, "stream_bytes_per_token", shown=""),
    Fault("huge_line", CloudBadResponse, "max_line_bytes"),
    Fault("huge_event", CloudBadResponse, "max_event_bytes"),
    Fault("huge_json", CloudBadResponse, "max_body_bytes", shown="", peak_mib=12.0),
    Fault("huge_error", CloudUnavailable, r"answered 500: \{\"error", shown=""),
    Fault("wrong_type", CloudBadResponse, "Content-Type 'text/html", shown=""),
    Fault("json_answer", None, shown=ANSWER),
    Fault("gzip_ok", None, shown=ANSWER),
    Fault("gzip_bomb", CloudBadResponse, "stream_bytes_per_token", shown=""),
    Fault("gzip_bomb_line", CloudBadResponse, "max_line_bytes", shown=""),
    Fault("gzip_json_bomb", CloudBadResponse, "max_body_bytes", shown="", peak_mib=12.0),
    Fault("unknown_encoding", CloudBadResponse, "encoded as 'br'", shown=""),
]
# These ones wait on a deadline that other faults' first-token timeout would mask: a long one.
PATIENT = {"endless_pings", "gzip_bomb", "gzip_bomb_line", "gzip_json_bomb", "huge_json", "endless_tokens",
           "huge_line", "huge_event", "endless_headers", "huge_error"}


def test_every_fault_the_server_knows_is_measured():
    assert {f.scenario for f in FAULTS} >= set(CLASSIC) | set(HOSTILE)


def _stream(client: CloudClient, trial: Trial, **kwargs) -> None:
    for piece in client.stream_chat(QUESTION, **kwargs):
        trial.shown.append(piece)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.scenario)
def test_each_fault_ends_in_bounded_time_and_memory_losing_nothing(faults, fault):
    timeouts = TIMEOUTS
    if fault.scenario in PATIENT:  # so that it is the limit that ends it, not a deadline
        timeouts = CloudTimeouts(connect=1.0, first_token=30.0, total=60.0, idle=30.0)
    url = fault.url or faults.url(fault.scenario)
    trials = []
    for _ in range(fault.trials):
        with CloudClient(url, "fault-model", KEY, timeouts, retries=2, backoff_s=0.01) as client:
            trials.append(measure(lambda trial, client=client: _stream(client, trial)))
    wall_bound = (fault.ends_by_s or 1.0) + SLACK_S
    RESULTS.append(
        f"| {fault.scenario} | {len(trials)} | "
        f"{max(t.elapsed_s for t in trials):.2f} s (bound {wall_bound:.1f}) | "
        f"{max(t.cpu_s for t in trials):.2f} s (bound {fault.cpu_s:g}) | "
        f"{max(t.traced_peak_mib for t in trials):.2f} MiB (bound {fault.peak_mib:g}) | "
        f"{_most(t.rss_growth_mib for t in trials)} (bound {fault.rss_mib:g}) | "
        f"{type(trials[0].error).__name__ if trials[0].error else 'answer'} |")
    for trial in trials:
        error = trial.error
        if fault.error is None:
            assert error is None, f"{type(error).__name__}: {error}"
        else:
            assert type(error) is fault.error, f"{type(error).__name__}: {error}"
            assert re.search(fault.match, str(error)), str(error)
            assert KEY not in str(error)
            if isinstance(error, CloudStreamBroken):
                assert error.partial == bool(trial.shown)  # the caller knows whether text was shown
        text = "".join(trial.shown)
        if fault.pieces is not None:  # nothing lost: every piece the server sent before the end
            assert trial.shown and set(trial.shown) == {fault.pieces}
        else:
            assert text == fault.shown
        assert trial.elapsed_s <= wall_bound, f"{trial.elapsed_s:.2f} s"
        if fault.ends_by_s:  # a deadline ends it, and not before its time
            assert trial.elapsed_s >= fault.ends_by_s * 0.9
        assert trial.cpu_s <= fault.cpu_s, f"{trial.cpu_s:.2f} CPU s"
        assert trial.traced_peak_mib <= fault.peak_mib, f"{trial.traced_peak_mib:.1f} MiB traced"
        if trial.rss_growth_mib is not None:
            assert trial.rss_growth_mib <= fault.rss_mib, f"{trial.rss_growth_mib:.1f} MiB of RSS"


def _most(values) -> str:
    known = [v for v in values if v is not None]
    return f"{max(known):.1f} MiB" if known else "n/a"


def test_endless_tokens_stop_at_the_max_tokens_asked_for(faults):
    """The answer's text is bounded by what was asked for: max_tokens x chars_per_token + 1024."""
    for max_tokens in (16, 512):
        shown: list[str] = []
        with (CloudClient(faults.url("endless_tokens"), "fault-model", KEY, TIMEOUTS) as client,
              pytest.raises(CloudBadResponse, match=f"more than the {max_tokens} tokens") as caught):
            shown.extend(client.stream_chat(QUESTION, max_tokens=max_tokens))
        limit = client.limits.answer_chars(max_tokens)
        assert limit - 4 < len("".join(shown)) <= limit and caught.value.partial


def test_a_gzip_stream_that_is_fine_still_reads_whole(faults):
    stats = CloudStats()
    with CloudClient(faults.url("gzip_ok"), "fault-model", KEY, TIMEOUTS) as client:
        assert "".join(client.stream_chat(QUESTION, stats=stats)) == ANSWER
    assert stats.finish_reason == "stop" and stats.completion_tokens == 4


def test_a_non_streamed_answer_is_read_whole_with_its_usage(faults):
    stats = CloudStats()
    with CloudClient(faults.url("json_answer"), "fault-model", KEY, TIMEOUTS) as client:
        assert list(client.stream_chat(QUESTION, stats=stats)) == [ANSWER]
    assert stats.usage_reported and stats.completion_tokens == 6 and stats.finish_reason == "stop"


@pytest.mark.parametrize("scenario, expect", [("huge_json", "max_body_bytes"), ("drip_headers", "first-token"),
                                              ("endless_headers", "broke off")])
def test_checking_a_hostile_endpoint_is_bounded_too(faults, scenario, expect):
    with CloudClient(faults.url(scenario), "fault-model", KEY, TIMEOUTS, backoff_s=0.01) as client:
        trial = measure(lambda trial: trial.shown.append(client.check()))
    reach = trial.shown[0]
    assert trial.error is None and not reach.ok and expect in reach.message and KEY not in reach.message
    assert trial.elapsed_s <= TIMEOUTS.first_token + SLACK_S and trial.traced_peak_mib <= 12.0
    RESULTS.append(f"| check {scenario} | 1 | {trial.elapsed_s:.2f} s | {trial.cpu_s:.2f} s | "
                   f"{trial.traced_peak_mib:.2f} MiB | {_most([trial.rss_growth_mib])} | not ok |")


# -- any event stream at all: only CloudError, and the partial flag right ----------------------

KEYS = st.sampled_from(["choices", "delta", "message", "content", "error", "usage", "finish_reason",
                        "completion_tokens", "prompt_tokens", "x"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
GOOD = st.text(max_size=8).map(lambda text: "data: " + json.dumps(chunk(text)) + "\n\n")
EVENTS = st.lists(
    GOOD | JSON.map(lambda value: "data: " + json.dumps(value) + "\n\n")
    | st.sampled_from(["data: [DONE]\n\n", ": ping\n\n", "event: error\n", "data: {bad\n\n", "\n", "data: 1"]),
    max_size=8,
)


@settings(derandomize=True, database=None, max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=EVENTS, cuts=st.lists(st.integers(1, 30), max_size=4))
@example(events=['data: {"choices": 5}\n\n'], cuts=[])
@example(events=['data: {"choices": {"a": 1}}\n\n'], cuts=[])
@example(events=['data: {"usage": {"completion_tokens": "many"}}\n\n'], cuts=[])
@example(events=['data: {"usage": {"completion_tokens": 1e999}}\n\n'], cuts=[])
@example(events=['data: {"error": {"message": 5}}\n\n'], cuts=[])
def test_any_event_stream_raises_nothing_but_cloud_errors(faults, events, cuts):
    body = "".join(events).encode()
    points = sorted({min(c, len(body)) for c in cuts})
    faults.fuzz_body = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    shown: list[str] = []
    with CloudClient(faults.url("fuzz"), "fault-model", KEY, TIMEOUTS) as client:
        try:
            shown.extend(client.stream_chat(QUESTION))
        except CloudStreamBroken as error:
            assert error.partial == bool(shown)
        except CloudError:
            assert not shown
    good = [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events if e.startswith('data: {"object"')]
    if events and all(e.startswith('data: {"object"') for e in events[:-1]) and events[-1] == "data: [DONE]\n\n":
        assert "".join(shown) == "".join(good)


# -- through the Assistant: what was shown stays, or local answers and says why ----------------


def cloud_assistant(skiff_home, base_url: str, **settings):
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    return Assistant(load_settings(cloud_base_url=base_url, cloud_model="fault-model", max_tokens=24,
                                   cloud_max_tokens=24, **settings))


@pytest.mark.parametrize("scenario, expect, settings", [
    ("drip_line", "total timeout", {"cloud_total_timeout_s": 2.0}),  # text, then a byte at a time
    ("huge_line", "max_line_bytes", {}),
    ("endless_tokens", "24 tokens asked for", {}),
], ids=["drip", "huge_line", "endless"])
def test_a_stream_cut_off_after_text_keeps_the_text_and_offers_local(skiff_home, faults, scenario, expect,
                                                                       settings):
    assistant = cloud_assistant(skiff_home, faults.url(scenario), **settings)
    try:
        pieces: list[str] = []
        first_piece_at: list[float] = []

        def on_token(piece: str) -> None:
            first_piece_at[:] = first_piece_at or [time.perf_counter()]
            pieces.append(piece)

        trial = measure(lambda trial: trial.shown.append(
            assistant.ask("What is six times seven?", use_notes=False, route="cloud", on_token=on_token)))
        after_first_s = time.perf_counter() - first_piece_at[0]  # the ask itself may load models first
        assert trial.error is None, trial.error
        answer = trial.shown[0]
        assert answer.answered_by == "cloud" and answer.text and answer.text == "".join(pieces)  # nothing lost
        assert answer.stop_reason == "cloud_stream_broken" and answer.local_offered
        assert any(expect in notice and "incomplete" in notice for notice in answer.notices), answer.notices
        assert assistant.answer_record(answer.id)["answer"] == answer.text
        assert after_first_s <= settings.get("cloud_total_timeout_s", 0.0) + SLACK_S
        assert trial.traced_peak_mib <= 16.0  # (RSS is not bounded here: the ask loads the models)
        RESULTS.append(f"| assistant {scenario} | 1 | {after_first_s:.2f} s after the first piece | "
                       f"{trial.cpu_s:.2f} s | {trial.traced_peak_mib:.2f} MiB | | kept {len(answer.text)} chars |")
    finally:
        assistant.close()


@pytest.mark.parametrize("scenario, expect", [("drip_headers", "first-token timeout"),
                                              ("gzip_bomb_line", "max_line_bytes")])
def test_a_fault_before_any_text_falls_back_to_local_and_says_why(skiff_home, faults, scenario, expect):
    assistant = cloud_assistant(skiff_home, faults.url(scenario), cloud_first_token_timeout_s=1.0, cloud_retries=1)
    try:
        spans = len(faults.header_spans)
        started = time.perf_counter()
        answer = assistant.ask("What is six times seven?", use_notes=False, route="cloud")
        assert answer.answered_by == "local" and answer.text
        assert any(expect in notice and "answered locally" in notice for notice in answer.notices), answer.notices
        assert assistant.answer_record(answer.id)["answered_by"] == "local"
        cloud_s = ""
        if scenario == "drip_headers":  # the server saw the client hang up at the first-token deadline
            # It learns of the hang-up at its next drip, which may come after ask() has returned.
            deadline = time.monotonic() + 5 * faults.drip_s + SLACK_S
            while len(faults.header_spans) == spans and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(faults.header_spans) == spans + 1
            assert faults.header_spans[-1] <= 1.0 + faults.drip_s + SLACK_S
            cloud_s = f"cloud part {faults.header_spans[-1]:.2f} s, "
        RESULTS.append(f"| assistant {scenario} | 1 | {cloud_s}{time.perf_counter() - started:.2f} s with the "
                       "local answer | | | | fell back to local |")
    finally:
        assistant.close()
