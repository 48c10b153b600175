"""One local model, many askers: who writes with it next.

The model answers one question at a time (a second decode would share its KV cache), so local
attempts take turns here, first come first served. A bound on how many may wait turns a crowd
into a clear "busy, retry in about N s" (the server's 429) instead of a queue nobody will live to
see answered. Waiting ends early when the asker cancels (a client that went away).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Iterator


class LocalBusy(RuntimeError):
    """Too many answers are already waiting for the local model."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"the local model is busy: {waiting} answer(s) are waiting for it; "
                         f"try again in about {retry_after_s} s")
        self.waiting, self.retry_after_s = waiting, retry_after_s


class WaitCancelled(RuntimeError):
    """The asker cancelled while waiting for the local model."""


class LocalGate:
    """`hold()` is the local model for one attempt. `max_waiting=None` never refuses (the chat and
    the CLI, which ask one question at a time); the server bounds it."""

    def __init__(self, max_waiting: int | None = None, typical_hold_s: float = 10.0) -> None:
        if max_waiting is not None and max_waiting < 0:
            raise ValueError("max_waiting must be 0 or more")
        self.max_waiting = max_waiting
        self._condition = threading.Condition()
        self._tickets = 0  # handed out, in order
        self._serving = 0  # the ticket whose turn it is
        self._holder: int | None = None  # the thread holding the model (a nested hold passes through)
        self._abandoned: set[int] = set()  # tickets whose asker left the line; skipped in turn
        self._mean_hold_s = typical_hold_s  # an average of recent holds, for Retry-After

    @property
    def waiting(self) -> int:
        with self._condition:
            return self._in_line() - (1 if self._holder is not None else 0)

    def _in_line(self) -> int:
        """Holding or waiting (the caller holds the condition)."""
        return self._tickets - self._serving - len(self._abandoned)

    @contextlib.contextmanager
    def hold(self, cancel: threading.Event | None = None, may_refuse: bool = True) -> Iterator[float]:
        """Wait for the model's turn and hold it for the block; yields the seconds waited. Raises
        LocalBusy when `may_refuse` and the line is full, WaitCancelled when `cancel` is set first.
        `may_refuse=False` for an answer that already showed text (it finishes, however long the line)."""
        me = threading.get_ident()
        if self._holder == me:  # the same answer's next attempt, inside this one's hold
            yield 0.0
            return
        started = time.perf_counter()
        ticket = self._take_ticket(may_refuse)
        try:
            self._wait_for(ticket, cancel)
        except BaseException:
            self._give_up(ticket)
            raise
        waited = time.perf_counter() - started
        held_from = time.perf_counter()
        with self._condition:
            self._holder = me
        try:
            yield waited
        finally:
            with self._condition:
                self._holder = None
                held = time.perf_counter() - held_from
                self._mean_hold_s = 0.8 * self._mean_hold_s + 0.2 * held
                self._serving += 1
                self._skip_abandoned()
                self._condition.notify_all()

    # -- the line ---------------------------------------------------------------------------------

    def _take_ticket(self, may_refuse: bool) -> int:
        with self._condition:
            busy = self._in_line()
            waiting = busy - 1 if busy else 0
            if may_refuse and self.max_waiting is not None and busy > 0 and waiting >= self.max_waiting:
                raise LocalBusy(waiting, max(1, math.ceil(self._mean_hold_s * busy)))
            ticket = self._tickets
            self._tickets += 1
            return ticket

    def _wait_for(self, ticket: int, cancel: threading.Event | None) -> None:
        with self._condition:
            while self._serving != ticket:
                if cancel is not None and cancel.is_set():
                    raise WaitCancelled("cancelled while waiting for the local model")
                # Wake now and then to notice a cancel that nobody notifies us of.
                self._condition.wait(timeout=0.1)

    def _give_up(self, ticket: int) -> None:
        """A waiter that left: its turn is skipped when it comes."""
        with self._condition:
            self._abandoned.add(ticket)
            self._skip_abandoned()
            self._condition.notify_all()

    def _skip_abandoned(self) -> None:
        while self._holder is None and self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
