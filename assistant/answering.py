"""Writing an answer: by the local model, or streamed from the cloud with the local model as the
fallback. Both report the same `Generated`, which the assistant records and returns."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from skiff.cloud import CloudClient, CloudError, CloudStats, CloudStreamBroken
from skiff.cloud.errors import REDACTED, redact
from skiff.local.llm import GenerationStats, LocalModel
from skiff.local.notes_index import Hit
from skiff.assistant.cloud_prompt import cloud_cost, plan_cloud_prompt
from skiff.router.policy import Decision, Route
from skiff.assistant.abstention import NOTES_DONT_SAY
from skiff.assistant.prompting import GENERAL_KNOWLEDGE_PROMPT, PromptPlan, plan_prompt
from skiff.config.settings import Settings


@dataclass(frozen=True)
class Source:
    number: int  # the [n] the answer cites
    path: str
    title: str
    section: str
    line_start: int
    line_end: int
    page: int | None
    score: float  # cosine similarity to the question
    private: bool = False  # `private: true` front matter; a later cloud question withholds this answer

    @classmethod
    def numbered(cls, hits: Sequence[Hit]) -> list["Source"]:
        return [cls(n, hit.path, hit.title, hit.section, hit.line_start, hit.line_end, hit.page,
                    round(1.0 - hit.distance, 4), hit.private) for n, hit in enumerate(hits, start=1)]

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def location(self) -> str:
        if self.page is not None:
            return f"page {self.page}"
        if self.line_start == self.line_end:
            return f"line {self.line_start}"
        return f"lines {self.line_start}-{self.line_end}"


# A citation marker: "[3]" after a space or punctuation, not an index like a[1] nor a link [1](…).
CITATION = re.compile(r"(?<![\w\]])\[(\d{1,3})\](?!\()")


def citations_without_a_source(text: str, source_count: int) -> list[int]:
    """The [n] an answer cites that name none of its sources: a small model invents them, and the
    person would otherwise look for a source that is not there."""
    return sorted({int(n) for n in CITATION.findall(text) if not 1 <= int(n) <= source_count})


def unknown_citations_notice(text: str, source_count: int) -> str | None:
    unknown = citations_without_a_source(text, source_count)
    if not unknown:
        return None
    cited = ", ".join(f"[{n}]" for n in unknown)
    if not source_count:
        return f"the answer cites {cited}, but it was given no sources"
    verb = "is" if len(unknown) == 1 else "are"
    return f"the answer cites {cited}, which {verb} not among its {source_count} source(s)"


@dataclass
class Answer:
    id: str
    question: str
    text: str
    decision: Decision
    sources: list[Source]
    timings: dict[str, float | None]
    tokens: dict[str, int | bool]
    stop_reason: str
    model: str
    notices: list[str] = field(default_factory=list)
    answered_by: Route = "local"  # who wrote the text (a cloud decision may fall back to local)
    cost_usd: float | None = None  # cloud answers: tokens × the configured prices
    local_offered: bool = False  # a cloud stream broke mid-answer: the local model can answer instead
    pair_id: str | None = None  # set when a local and a cloud answer to this question both exist
    allocation: dict | None = None  # local+: how much local compute it got (vote, LoRA) and what came of it
    # "My notes don't say": the check's signals and verdict (assistant/abstention.py), when it ran.
    abstention: dict | None = None

    @property
    def abstained(self) -> bool:
        return bool(self.abstention and self.abstention.get("abstained"))

    @property
    def route(self) -> Route:
        return self.decision.route

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.text,
            "route": self.route,
            "answered_by": self.answered_by,
            "decision": self.decision.as_dict(),
            "sources": [s.as_dict() for s in self.sources],
            "timings": self.timings,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "stop_reason": self.stop_reason,
            "model": self.model,
            "notices": self.notices,
            "local_offered": self.local_offered,
            "pair_id": self.pair_id,
            "allocation": self.allocation,
            "abstained": self.abstained,
            "abstention": self.abstention,
        }


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
                 pieces: list[str] | None = None) -> Generated:
    generated = generated if generated is not None else Generated()
    generated.notes = list(plan.notes)
    if plan.truncated:
        generated.notices.append(f"trimmed to fit the {model.n_ctx}-token context: {', '.join(plan.truncated)}")
    stats = GenerationStats()
    pieces = pieces if pieces is not None else []
    try:
        for piece in model.stream(plan.prompt_tokens, max_tokens=settings.max_tokens, temperature=settings.temperature,
                                  stats=stats, should_stop=cancel.is_set if cancel is not None else None):
            _emit(pieces, generated, piece, on_token)
    finally:
        generated.text = "".join(pieces)
        generated.stop_reason = stats.stop_reason or "error"
        generated.prompt_tokens, generated.completion_tokens = stats.prompt_tokens, stats.completion_tokens
        generated.decode_tokens_per_s = stats.decode_tokens_per_s
    return generated


class _KeyFilter:
    """The API key hidden in a streamed answer (a careless gateway may answer with it), even split
    over pieces: only a tail that could begin the key waits for the next piece."""

    def __init__(self, secret: str) -> None:
        self.secret = secret if len(secret) >= 8 else ""
        self.held = ""

    def feed(self, piece: str) -> str:
        if not self.secret:
            return piece
        text = (self.held + piece).replace(self.secret, REDACTED)
        hold = next((n for n in range(min(len(text), len(self.secret) - 1), 0, -1)
                     if self.secret.startswith(text[-n:])), 0)
        self.held = text[len(text) - hold:]
        return text[:len(text) - hold]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return redact(held, self.secret)  # a start of the key that ends the answer is hidden too


def generate_in_cloud(client: CloudClient, settings: Settings, question: str, hits: Sequence[Hit],
                      history: Sequence[dict], on_token: Callable[[str], None] | None,
                      cancel: threading.Event | None, record_sent: Callable[[dict], None]) -> Generated:
    """Streams the cloud's answer. Fails over to local (fell_back) only while nothing has been
    shown; once text is out, a broken stream keeps it and offers a local answer instead."""
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
    key_filter = _KeyFilter(getattr(client, "_secret", "") or "")
    try:
        for piece in client.stream_chat(prompt.plan.messages, max_tokens=settings.cloud_max_tokens,
                                        temperature=settings.temperature, stats=stats,
                                        should_stop=cancel.is_set if cancel is not None else None):
            piece = key_filter.feed(piece)
            if piece:
                _emit(pieces, generated, piece, on_token)
        rest = key_filter.flush()
        if rest:
            _emit(pieces, generated, rest, on_token)
        generated.stop_reason = {"stop": "eos", "length": "length"}.get(stats.finish_reason or "",
                                                                         stats.finish_reason or "eos")
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
        client.close()
        generated.text = "".join(pieces)
        generated.prompt_tokens, generated.completion_tokens = stats.prompt_tokens, stats.completion_tokens
        generated.tokens_estimated = not stats.usage_reported
        generated.decode_tokens_per_s = stats.decode_tokens_per_s
        generated.cost_usd = cloud_cost(settings, stats.prompt_tokens, stats.completion_tokens)
    return generated
