"""`skiff serve`'s routes: OpenAI's chat completions and models, and skiff's feedback.

Every answer goes through the same `Assistant.ask` as the CLI and is recorded the same way. The
local model answers one question at a time (a bounded line, assistant/local_gate.py); cloud
answers run side by side. Every failure is an OpenAI-shaped error with a status, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from skiff.app.server.answers import AnswerRun, ChunkWriter, Event, completion, stream_events
from skiff.app.server.errors import ApiError
from skiff.app.server.requests import MODEL_DESCRIPTIONS, MODELS, parse_chat_request

log = logging.getLogger("skiff.serve")

# How often a waiting request looks whether its client is still there: a client that left frees
# its place in the line (and the model) within this.
DISCONNECT_POLL_S = 0.2
# Answers in flight at once: cloud answers run side by side, local ones wait in the gate's line.
WORKER_THREADS = 64


class ServerState:
    def __init__(self, assistant, api_key: str, warm_up: bool) -> None:
        self.assistant, self.api_key, self.warm_up = assistant, api_key, warm_up
        self.settings = assistant.settings
        self.executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="skiff-answer")
        self.in_flight: set = set()  # each answer's cancel event, so a shutdown can stop them


def create_app(assistant, api_key: str, warm_up: bool = True) -> Starlette:
    """The ASGI app. `assistant` is an `Assistant` (its local gate is bounded here by the
    serve_queue_size setting); `api_key` is the key clients must send as a Bearer token."""
    from skiff.assistant.local_gate import LocalGate

    if not api_key:
        raise ValueError("skiff serve needs an API key")
    assistant.local_gate = LocalGate(max_waiting=assistant.settings.serve_queue_size)
    state = ServerState(assistant, api_key, warm_up)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if state.warm_up:  # the first client should not wait for the model to load
            await asyncio.get_running_loop().run_in_executor(state.executor, _warm_up, assistant)
        yield
        for cancel in list(state.in_flight):  # past the graceful wait: stop what still runs
            cancel.set()
        state.executor.shutdown(wait=True)

    routes = [
        Route("/v1/chat/completions", _guarded(state, chat_completions), methods=["POST"]),
        Route("/v1/models", _guarded(state, list_models), methods=["GET"]),
        Route("/v1/models/{model}", _guarded(state, get_model), methods=["GET"]),
        Route("/v1/skiff/feedback", _guarded(state, feedback), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    handlers = {HTTPException: _http_error, Exception: _server_error}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


def _warm_up(assistant) -> None:
    """Load what every answer needs before the first client comes: the model, the embedder, the
    index and the router (a decision is made and nothing recorded)."""
    try:
        assistant.model  # noqa: B018 - loading is the point
        assistant.prepare_local()
    except Exception as error:  # noqa: BLE001 - a cloud-only setup still serves; the answer will say
        log.warning("the local model did not load: %s", error)
    try:
        assistant.decide("What do my notes say?")
    except Exception as error:  # noqa: BLE001 - nothing indexed yet, say: the first question says more
        log.warning("the notes and the router did not load: %s", error)


Handler = Callable[[Request, ServerState], Awaitable[Response]]


def _guarded(state: ServerState, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            _check_key(request, state.api_key)
            return await handler(request, state)
        except ApiError as error:
            return error.response()

    return endpoint


def _check_key(request: Request, api_key: str) -> None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Compared in constant time; the key given is never echoed, logged or put in an error.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>` with the key "
                            "`skiff serve` printed on its first run (or the serve_api_key setting)",
                       code="invalid_api_key")


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = ApiError(413, f"the request body is larger than {limit // 1024} KiB (the serve_max_body_kb setting)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_big
    return bytes(body)


# -- routes -----------------------------------------------------------------------------------------


async def chat_completions(request: Request, state: ServerState) -> Response:
    settings = state.settings
    body = await _read_body(request, settings.serve_max_body_kb * 1024)
    chat = parse_chat_request(body, settings.max_tokens, settings.cloud_max_tokens)
    run = AnswerRun(state.assistant, chat, state.executor, state.in_flight)
    first = await _next_or_gone(run, request)
    if first is None:
        return Response(status_code=499)
    if chat.stream:
        if first.kind == "error":
            return first.value.response()
        writer = ChunkWriter(chat.model, settings.serve_sources_as_text, chat.include_usage)
        return StreamingResponse(stream_events(run, writer, first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    event = first
    while event.kind in ("token", "aside"):  # a whole answer is sent at once
        event = await _next_or_gone(run, request)
        if event is None:
            return Response(status_code=499)
    if event.kind == "error":
        return event.value.response()
    return JSONResponse(completion(event.value, chat.model, settings.serve_sources_as_text))


async def _next_or_gone(run: AnswerRun, request: Request) -> Event | None:
    """The answer's next event; None (and the answer stopped) when the client left first."""
    while True:
        try:
            return await asyncio.wait_for(run.next_event(), DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                run.stop()
                return None


async def list_models(request: Request, state: ServerState) -> Response:
    return JSONResponse({"object": "list", "data": [_model(name) for name in MODELS]})


async def get_model(request: Request, state: ServerState) -> Response:
    name = request.path_params["model"]
    if name not in MODELS:
        raise ApiError(404, f"the model {name!r} does not exist; skiff serves {', '.join(MODELS)}",
                       code="model_not_found", param="model")
    return JSONResponse(_model(name))


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "skiff", "description": MODEL_DESCRIPTIONS[name]}


async def feedback(request: Request, state: ServerState) -> Response:
    """`{"answer_id": "...", "verdict": "good" | "bad"}`: as `skiff feedback`, the router learns."""
    import json

    from skiff.router.feedback import FeedbackError

    body = await _read_body(request, 64 * 1024)
    try:
        given = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(given, dict) or set(given) - {"answer_id", "verdict"}:
        raise ApiError(400, "send {\"answer_id\": ..., \"verdict\": \"good\" or \"bad\"} and nothing else")
    answer_id, verdict = given.get("answer_id"), given.get("verdict")
    if not isinstance(answer_id, str) or not answer_id or verdict not in ("good", "bad"):
        raise ApiError(400, "answer_id must be an answer's id and verdict \"good\" or \"bad\"",
                       param="verdict" if isinstance(answer_id, str) and answer_id else "answer_id")
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(state.executor, state.assistant.feedback, verdict, answer_id)
    except FeedbackError as error:
        raise ApiError(404 if "no answer" in str(error) else 400, str(error), param="answer_id") from None
    return JSONResponse(result.as_dict())


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "time": time.time()})


async def _http_error(request: Request, error: HTTPException) -> Response:
    messages = {404: f"no such route: {request.method} {request.url.path}",
                405: f"{request.url.path} does not take {request.method}"}
    return ApiError(error.status_code, messages.get(error.status_code, str(error.detail))).response()


async def _server_error(request: Request, error: Exception) -> Response:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__, error)
    return ApiError(500, f"skiff failed on this request: {type(error).__name__}").response()
