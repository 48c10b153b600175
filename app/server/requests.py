"""What a chat completion request may say, read strictly: a wrong type, an unknown field, an empty
conversation or an option skiff cannot honour is a 400 that names it, never a guess.

OpenAI's own options that change nothing about skiff's answer (top_p, seed, user, stop, ...) are
accepted and left unused, so the clients people already have work unchanged; options whose meaning
skiff cannot give (several choices, tools, log probabilities, JSON mode) are refused by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skiff.app.server.errors import ApiError

# What each model name answers with: the router's choice, or a route forced by the client.
MODELS: dict[str, str | None] = {"skiff": None, "skiff-local": "local", "skiff-cloud": "cloud"}
MODEL_DESCRIPTIONS = {
    "skiff": "routed: your notes, the router, the draft check and fallbacks, as `skiff ask`",
    "skiff-local": "the local model only, as `skiff ask --route local`",
    "skiff-cloud": "the cloud endpoint (private notes withheld), as `skiff ask --route cloud`",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    # Accepted and unused: they tune sampling details or bookkeeping skiff does its own way.
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None
    service_tier: str | None = None
    # Refused unless they ask for what skiff does anyway.
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A request as the pipeline takes it: the last user message is the question, the turns before
    it the history."""

    model: str
    route: str | None
    question: str
    history: list[dict] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    overrides: dict = field(default_factory=dict)


def parse_chat_request(body: bytes, max_tokens_setting: int, cloud_max_tokens_setting: int) -> ChatRequest:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        request = ChatCompletionRequest.model_validate(raw)
    except ValidationError as error:
        raise _invalid(error) from None
    _refuse_what_skiff_cannot_do(request)
    if request.model not in MODELS:
        raise ApiError(404, f"the model {request.model!r} does not exist; skiff serves {', '.join(MODELS)}",
                       code="model_not_found", param="model")
    return ChatRequest(request.model, MODELS[request.model], *_question_and_history(request.messages),
                       stream=request.stream,
                       include_usage=bool(request.stream_options and request.stream_options.include_usage),
                       overrides=_overrides(request, max_tokens_setting, cloud_max_tokens_setting))


def _invalid(error: ValidationError) -> ApiError:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        return ApiError(400, f"unknown field {where!r}", param=where)
    return ApiError(400, f"{where}: {first['msg']}", param=where)


def _refuse_what_skiff_cannot_do(request: ChatCompletionRequest) -> None:
    if request.n not in (None, 1):
        raise ApiError(400, "skiff writes one answer per request: n must be 1", param="n")
    if request.logprobs or request.top_logprobs:
        raise ApiError(400, "skiff does not return log probabilities", param="logprobs")
    if request.tools or request.tool_choice not in (None, "none", "auto"):
        raise ApiError(400, "skiff does not call tools; use `skiff mcp` to give an agent skiff's tools",
                       param="tools")
    if request.response_format is not None and request.response_format.get("type") != "text":
        raise ApiError(400, "skiff answers in text; JSON output formats are not supported", param="response_format")
    if request.logit_bias:
        raise ApiError(400, "skiff does not support logit_bias", param="logit_bias")


def _question_and_history(messages: list[Message]) -> tuple[str, list[dict]]:
    # skiff writes its own instructions around the notes; a client's system prompt is not passed on.
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "the last message must be the user's question", param="messages")
    question = turns[-1].text().strip()
    if not question:
        raise ApiError(400, "the question (the last user message) is empty", param="messages")
    return question, [{"role": m.role, "content": m.text()} for m in turns[:-1]]


def _overrides(request: ChatCompletionRequest, max_tokens: int, cloud_max_tokens: int) -> dict:
    """A client may lower skiff's answer length and choose the local temperature; raising the
    length past the setting is not the client's call (it is the person's laptop)."""
    overrides: dict = {}
    asked = request.max_completion_tokens or request.max_tokens
    if asked is not None:
        overrides["max_tokens"] = min(asked, max_tokens)
        overrides["cloud_max_tokens"] = min(asked, cloud_max_tokens)
    if request.temperature is not None:
        overrides["temperature"] = request.temperature
    return overrides
