"""An answer for a client: the pipeline runs in a worker thread and its pieces cross to the event
loop through a queue; the OpenAI shapes (chunks, the completion) are built here.

A streamed answer's status is decided by its first event, before any header is sent: a local model
too busy to take it is a 429 and a failure is its error, not a 200 with a broken stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator

from skiff.app.server.errors import ApiError
from skiff.app.server.requests import ChatRequest
from skiff.assistant import Answer, LocalBusy

# What the SSE stream says when a draft the local model was unsure of is set aside for a stronger
# answer: the draft's text was already sent, so the client sees why another answer follows.
SET_ASIDE = "\n\n— {reason}; a stronger answer follows —\n\n"


@dataclass
class Event:
    kind: str  # "token", "aside", "done", "error"
    value: object = None


class AnswerRun:
    """One question on its way through `assistant.ask` in a worker thread."""

    def __init__(self, assistant, request: ChatRequest, executor: ThreadPoolExecutor,
                 in_flight: set[threading.Event]) -> None:
        self.request = request
        self.cancel = threading.Event()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._in_flight = in_flight
        in_flight.add(self.cancel)
        self.future = self._loop.run_in_executor(executor, self._work, assistant)

    def _put(self, event: Event) -> None:
        self._loop.call_soon_threadsafe(self.events.put_nowait, event)

    def _work(self, assistant) -> None:
        request = self.request
        try:
            answer = assistant.ask(
                request.question, history=request.history, route=request.route, cancel=self.cancel,
                on_token=lambda piece: self._put(Event("token", piece)),
                on_set_aside=lambda reason: self._put(Event("aside", reason)),
                overrides=request.overrides or None)
            self._put(Event("done", answer))
        except LocalBusy as busy:
            self._put(Event("error", ApiError(429, str(busy), code="rate_limit_exceeded",
                                              retry_after_s=busy.retry_after_s)))
        except ValueError as error:  # the pipeline's word on a question it will not take
            self._put(Event("error", ApiError(400, str(error))))
        except Exception as error:  # noqa: BLE001 - said to the client in one line, never a traceback
            self._put(Event("error", ApiError(500, f"skiff could not answer: {type(error).__name__}: {error}")))
        finally:
            self._loop.call_soon_threadsafe(self._in_flight.discard, self.cancel)

    async def next_event(self) -> Event:
        return await self.events.get()

    def stop(self) -> None:
        """The client went away: the generation stops at its next token and frees the model."""
        self.cancel.set()


# -- the OpenAI shapes ---------------------------------------------------------------------------


def skiff_field(answer: Answer) -> dict:
    """What rides along with the answer: where it was answered and why, and what it cites."""
    return {"answer_id": answer.id, "route": answer.route, "answered_by": answer.answered_by,
            "reason": answer.decision.reason, "model": answer.model, "notices": list(answer.notices),
            "stop_reason": answer.stop_reason,
            "timings": {"queue_wait_s": answer.timings.get("queue_wait_s") or 0.0,
                        "first_token_s": answer.timings.get("first_token_s"), "total_s": answer.timings.get("total_s")},
            "sources": [{"number": s.number, "path": s.path, "title": s.title, "section": s.section,
                         "line_start": s.line_start, "line_end": s.line_end, "page": s.page}
                        for s in answer.sources]}


def sources_text(answer: Answer) -> str:
    if not answer.sources:
        return ""
    lines = [f"[{s.number}] {s.path}" + (f" § {s.section}" if s.section else "") + f" ({s.location})"
             for s in answer.sources]
    return "\n\nSources:\n" + "\n".join(lines)


def _finish_reason(answer: Answer) -> str:
    return "length" if answer.stop_reason in ("length", "context") else "stop"


def _usage(answer: Answer) -> dict:
    prompt, completion = int(answer.tokens.get("prompt") or 0), int(answer.tokens.get("completion") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(answer: Answer, model: str, with_sources_text: bool) -> dict:
    text = answer.text + (sources_text(answer) if with_sources_text else "")
    return {"id": f"chatcmpl-{answer.id}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": _finish_reason(answer), "logprobs": None,
                         "message": {"role": "assistant", "content": text, "refusal": None,
                                     "skiff": skiff_field(answer)}}],
            "usage": _usage(answer)}


class ChunkWriter:
    """The SSE lines of one streamed answer."""

    def __init__(self, model: str, with_sources_text: bool, include_usage: bool) -> None:
        self.id = f"chatcmpl-{int(time.time() * 1000):x}"
        self.model, self.with_sources_text, self.include_usage = model, with_sources_text, include_usage
        self.created = int(time.time())

    def _chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> bytes:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
                 **extra}
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def first(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def piece(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def last(self, answer: Answer) -> bytes:
        out = b""
        if self.with_sources_text and answer.sources:
            out += self.piece(sources_text(answer))
        out += self._chunk({}, _finish_reason(answer), skiff=skiff_field(answer))
        if self.include_usage:
            usage = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                     "choices": [], "usage": _usage(answer)}
            out += b"data: " + json.dumps(usage).encode() + b"\n\n"
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(error: ApiError) -> bytes:
        return b"data: " + json.dumps(error.body(), ensure_ascii=False).encode() + b"\n\ndata: [DONE]\n\n"


async def stream_events(run: AnswerRun, writer: ChunkWriter, first: Event) -> AsyncIterator[bytes]:
    """The SSE body from the first event on. However it ends (the answer done, or the client gone,
    which cancels this generator), the generation is told to stop."""
    try:
        yield writer.first()
        event = first
        while True:
            if event.kind == "token":
                yield writer.piece(str(event.value))
            elif event.kind == "aside":
                yield writer.piece(SET_ASIDE.format(reason=event.value))
            elif event.kind == "done":
                yield writer.last(event.value)
                return
            else:
                yield writer.error(event.value)
                return
            event = await run.next_event()
    finally:
        run.stop()
