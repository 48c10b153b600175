"""The local model's line (assistant/local_gate.py): first come first served, bounded, and a
waiter that leaves gives its place up."""

from __future__ import annotations

import threading
import time

import pytest

from skiff.assistant.local_gate import LocalBusy, LocalGate, WaitCancelled


def _hold_in_thread(gate: LocalGate, release: threading.Event, order: list, name: str,
                    cancel: threading.Event | None = None, errors: list | None = None) -> threading.Thread:
    def run() -> None:
        try:
            with gate.hold(cancel):
                order.append(name)
                release.wait(10)
        except (LocalBusy, WaitCancelled) as error:
            (errors if errors is not None else order).append(type(error).__name__)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_askers_take_turns_in_the_order_they_came():
    gate, release, order = LocalGate(), threading.Event(), []
    threads = []
    for name in "abcd":
        threads.append(_hold_in_thread(gate, release, order, name))
        _wait_until(lambda expected=len(threads): gate.waiting + (1 if order else 0) >= expected)  # noqa: B008
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == list("abcd")


def test_a_full_line_refuses_with_when_to_come_back():
    gate, release, order = LocalGate(max_waiting=1, typical_hold_s=4.0), threading.Event(), []
    first = _hold_in_thread(gate, release, order, "holder")
    _wait_until(lambda: order == ["holder"])
    second = _hold_in_thread(gate, release, order, "waiter")
    _wait_until(lambda: gate.waiting == 1)
    with pytest.raises(LocalBusy) as refused:
        with gate.hold():
            pass
    assert refused.value.waiting == 1 and refused.value.retry_after_s >= 4
    # An answer that already showed text is never refused: it waits its turn.
    def finish_a_shown_answer() -> None:
        with gate.hold(may_refuse=False):
            order.append("shown")

    third = threading.Thread(target=finish_a_shown_answer, daemon=True)
    third.start()
    _wait_until(lambda: gate.waiting == 2)
    release.set()
    for thread in (first, second, third):
        thread.join(5)
    assert order == ["holder", "waiter", "shown"]


def test_a_waiter_that_cancels_leaves_and_the_next_one_is_served():
    gate, release, order, errors = LocalGate(), threading.Event(), [], []
    cancel = threading.Event()
    holder = _hold_in_thread(gate, release, order, "holder")
    _wait_until(lambda: order == ["holder"])
    leaver = _hold_in_thread(gate, release, order, "leaver", cancel=cancel, errors=errors)
    _wait_until(lambda: gate.waiting == 1)
    stayer = _hold_in_thread(gate, release, order, "stayer")
    _wait_until(lambda: gate.waiting == 2)
    cancel.set()
    _wait_until(lambda: errors == ["WaitCancelled"])
    assert gate.waiting == 1
    release.set()
    for thread in (holder, leaver, stayer):
        thread.join(5)
    assert order == ["holder", "stayer"]
    assert gate.waiting == 0


def test_a_second_hold_in_the_same_answer_passes_through():
    gate = LocalGate(max_waiting=0)
    with gate.hold() as waited:
        with gate.hold() as again:
            assert again == 0.0
    assert waited < 1.0
    assert gate.waiting == 0
