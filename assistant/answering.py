"""Writing an answer: by the local model, or streamed from the cloud. Both report the same
`Generated`; the attempts (attempts.py) decide what comes of it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from skiff.cloud import CloudClient, CloudError, CloudStats, CloudStreamBroken
from skiff.local.llm import GenerationStats, LocalModel, TokenConfidence
from skiff.local.notes_index import Hit
from skiff.assistant.cloud_prompt import cloud_cost, plan_cloud_prompt
from skiff.assistant.abstention import NOTES_DONT_SAY
from skiff.assistant.prompting import GENERAL_KNOWLEDGE_PROMPT, PromptPlan, plan_prompt
from skiff.config.settings import Settings


@dataclass
class Generated:
    """One model's attempt. `fell_back` means the cloud produced nothing and the local model
    should answer instead; `notices` says why."""

    text: str = ""
    notes: list[Hit] = field(default_factory=list)
    stop_reason: str = "error"
    first_piece_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    decode_tokens_per_s: float | None = None
    cost_usd: float | None = None
    notices: list[str] = field(default_factory=list)
    fell_back: bool = False
    local_offered: bool = False
    abstained: bool = False  # the notes did not hold the answer: said first, then general knowledge


def _emit(pieces: list[str], generated: Generated, piece: str, on_token: Callable[[str], None] | None) -> None:
    if generated.first_piece_at is None:
        generated.first_piece_at = time.perf_counter()
    pieces.append(piece)
    if on_token is not None:
        on_token(piece)


def generate_locally(model: LocalModel, settings: Settings, question: str, hits: Sequence[Hit],
                     history: Sequence[dict], on_token: Callable[[str], None] | None,
                     cancel: threading.Event | None, plan: PromptPlan | None = None) -> Generated:
    """The local model's answer from these notes (`plan`: their prompt, when already planned)."""
    plan = plan or plan_prompt(model, question, hits, history, max_answer_tokens=settings.max_tokens)
    return stream_plan(model, settings, plan, on_token, cancel)


def general_answer(model: LocalModel, settings: Settings, question: str, history: Sequence[dict],
                   on_token: Callable[[str], None] | None, cancel: threading.Event | None) -> Generated:
    """The notes do not hold the answer (assistant/abstention.py): the answer's first line says so,
    then the model answers briefly from general knowledge, without the notes."""
    plan = plan_prompt(model, question, [], history, max_answer_tokens=settings.max_tokens,
                       system_prompt=GENERAL_KNOWLEDGE_PROMPT)
    opening = f"{NOTES_DONT_SAY}\n\n"
    generated = Generated(abstained=True)
    pieces: list[str] = []
    _emit(pieces, generated, opening, on_token)
    return stream_plan(model, settings, plan, on_token, cancel, generated=generated, pieces=pieces)


def stream_plan(model: LocalModel, settings: Settings, plan: PromptPlan, on_token: Callable[[str], None] | None,
                cancel: threading.Event | None, generated: Generated | None = None,
                pieces: list[str] | None = None, confidence: TokenConfidence | None = None,
                should_stop: Callable[[], bool] | None = None) -> Generated:
    """The local model writes the plan's answer. `confidence` records each token's log-probability
    and entropy as it goes; `should_stop` (called after every token) ends it early, as `cancel` does."""
    generated = generated if generated is not None else Generated()
    generated.notes = list(plan.notes)
    if (trimmed := plan.trimmed_notice(model.n_ctx)) is not None:
        generated.notices.append(trimmed)
    stats = GenerationStats(confidence=confidence)
    pieces = pieces if pieces is not None else []
    if should_stop is None and cancel is not None:
        should_stop = cancel.is_set
    try:
        for piece in model.stream(plan.prompt_tokens, max_tokens=settings.max_tokens, temperature=settings.temperature,
                                  stats=stats, should_stop=should_stop):
            _emit(pieces, generated, piece, on_token)
    finally:
        generated.text = "".join(pieces)
        generated.stop_reason = stats.stop_reason or "error"
        generated.prompt_tokens, generated.completion_tokens = stats.prompt_tokens, stats.completion_tokens
        generated.decode_tokens_per_s = stats.decode_tokens_per_s
    return generated


def generate_in_cloud(client: CloudClient, settings: Settings, question: str, hits: Sequence[Hit],
                      history: Sequence[dict], on_token: Callable[[str], None] | None,
                      cancel: threading.Event | None, record_sent: Callable[[dict], None]) -> Generated:
    """Streams the cloud's answer. Fails over to local (fell_back) only while nothing has been
    shown; once text is out, a broken stream keeps it and offers a local answer instead. The
    caller owns `client` and closes it."""
    prompt = plan_cloud_prompt(settings, question, hits, history)
    generated = Generated(notes=list(prompt.plan.notes))
    if prompt.withheld:
        generated.notices.append(f"{prompt.withheld} note chunk(s) from private notes stayed on this machine")
    if prompt.turns_withheld:
        generated.notices.append(f"{prompt.turns_withheld} earlier answer(s) drawn from private notes stayed on "
                                 "this machine")
    # Recorded before the request goes out: what left the machine is known even after a crash.
    record_sent(prompt.sent_record(client.base_url, client.model))
    stats = CloudStats()
    pieces: list[str] = []
    try:
        for piece in client.stream_chat(prompt.plan.messages, max_tokens=settings.cloud_max_tokens,
                                        temperature=settings.temperature, stats=stats,
                                        should_stop=cancel.is_set if cancel is not None else None):
            _emit(pieces, generated, piece, on_token)
        generated.stop_reason = {"stop": "eos", "length": "length"}.get(stats.finish_reason or "",
                                                                         stats.finish_reason or "eos")
        if not "".join(pieces).strip() and not (cancel is not None and cancel.is_set()):
            # An empty answer is no answer: the person would be left with nothing to read.
            generated.fell_back = True
            generated.notices.append("the cloud returned an empty answer; answered locally")
    except CloudStreamBroken as error:
        if pieces:
            generated.stop_reason = "cloud_stream_broken"
            generated.local_offered = True
            generated.notices.append(f"{error}. The answer above is incomplete; it is kept as it is. "
                                     "The local model can answer instead (`skiff ask --route local`).")
        else:
            generated.fell_back = True
            generated.notices.append(f"{error}; answered locally")
    except CloudError as error:
        generated.fell_back = True
        generated.notices.append(f"{error}; answered locally")
    finally:
        generated.text = "".join(pieces)
        generated.prompt_tokens, generated.completion_tokens = stats.prompt_tokens, stats.completion_tokens
        generated.tokens_estimated = not stats.usage_reported
        generated.decode_tokens_per_s = stats.decode_tokens_per_s
        generated.cost_usd = cloud_cost(settings, stats.prompt_tokens, stats.completion_tokens)
    return generated
