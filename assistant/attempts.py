"""The answer as a chain of attempts.

The route chooses the chain: the cloud then more local compute; more local compute then, if it
asks to escalate, the cloud; or the local model alone. Each attempt writes what it can and says
what should happen next:

- final: this is the answer;
- fall back: it produced nothing usable (the cloud refused, timed out, dropped before any text),
  so the next attempt answers; its notices say why;
- escalate: it has an answer but wants a stronger one (a vote whose samples disagree, a draft
  the local model is unsure of); the next attempt answers, and if that one falls back, this
  answer stands, or the attempt after it finishes the draft that was cut short.

One loop runs the chain and is the only place that decides who answered and shows an answer
that was not streamed as it was written (a vote's is chosen after all samples are done).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol, Sequence

from skiff.assistant.abstention import NotesCheck, check_applies
from skiff.assistant.adapter_spec import TuningProgress
from skiff.assistant.answering import Generated, general_answer, generate_in_cloud, stream_plan
from skiff.assistant.cascade import DraftWatch, escalation_reason, unsure_notice
from skiff.assistant.cloud_prompt import why_no_cloud
from skiff.assistant.local_plus import LocalParts, spend_local_compute
from skiff.assistant.prompting import PromptPlan, plan_prompt
from skiff.cloud import CloudClient
from skiff.config.settings import Settings
from skiff.local.notes_index import NotesIndex
from skiff.router.draft_check import DraftCheck, DraftVerdict
from skiff.router.policy import Decision, QuestionWithNotes, Route

Outcome = Literal["final", "fall_back", "escalate"]

CLOUD_MAY_KNOW = ("your notes do not hold this; the cloud model may know: `skiff ask --route cloud` "
                  "(or c on the message)")


@dataclass
class Turn:
    """One question on its way to an answer: what every attempt reads."""

    consulted: QuestionWithNotes
    decision: Decision
    history: Sequence[dict] = ()
    on_token: Callable[[str], None] | None = None
    cancel: threading.Event | None = None
    on_progress: TuningProgress | None = None
    record_sent: Callable[[dict], None] = lambda sent: None  # what left the machine, before it leaves
    # An attempt that streamed text escalates: the text shown so far is set aside (folded, kept).
    on_set_aside: Callable[[str], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


@dataclass
class Tried:
    """What one attempt wrote, and what should happen next."""

    generated: Generated
    outcome: Outcome = "final"
    reason: str = ""  # escalate: why a stronger answer is wanted (said when one comes)
    streamed: bool = True  # its text went to on_token as it was written
    allocation: dict | None = None  # local+: the compute it was given and what came of it
    abstention: dict | None = None  # the notes check's signals and verdict, when it ran
    draft_check: DraftVerdict | None = None  # the cascade's check of a local draft, when it ran


class Attempt(Protocol):
    answered_by: Route  # who writes the text: "local" or "cloud"
    model: str  # the model's name as recorded

    def run(self, turn: Turn) -> Tried: ...


@dataclass
class Attempted:
    """What the chain came to."""

    generated: Generated
    answered_by: Route
    model: str
    notices: list[str] = field(default_factory=list)
    allocation: dict | None = None
    abstention: dict | None = None
    draft_check: DraftVerdict | None = None
    draft: str | None = None  # a draft that escalated and was set aside for a stronger answer


def run_attempts(attempts: Sequence[Attempt], turn: Turn, notices: Sequence[str] = ()) -> Attempted:
    """Run the chain until an attempt is final (or, after an escalation, until the chain runs out
    or the person cancels); the answer is that attempt's, or the escalating one's."""
    said, allocation, abstention, draft_check = list(notices), None, None, None
    kept: tuple[Attempt, Tried] | None = None
    chosen: tuple[Attempt, Tried] | None = None
    for attempt in attempts:
        if kept is not None and turn.cancelled:
            break
        tried = attempt.run(turn)
        allocation, abstention = tried.allocation or allocation, tried.abstention or abstention
        draft_check = tried.draft_check or draft_check
        if tried.outcome == "final":
            said += ([kept[1].reason] if kept is not None and kept[1].reason else []) + tried.generated.notices
            chosen = (attempt, tried)
            break
        said += tried.generated.notices
        if tried.outcome == "escalate":
            kept = (attempt, tried)
            if tried.streamed and tried.generated.text and turn.on_set_aside is not None:
                turn.on_set_aside(tried.reason)
    chosen = chosen or kept
    if chosen is None:
        raise RuntimeError("no attempt in the chain answered")  # every chain ends in a local attempt
    attempt, tried = chosen
    generated = tried.generated
    if not tried.streamed and generated.text:
        generated.first_piece_at = time.perf_counter()
        if turn.on_token is not None:
            turn.on_token(generated.text)
    draft = kept[1].generated.text if kept is not None and chosen is not kept and kept[1].streamed else None
    return Attempted(generated, attempt.answered_by, attempt.model, said, allocation, abstention, draft_check,
                     draft or None)


class CloudAttempt:
    """The cloud endpoint, streaming; falls back while it has shown nothing."""

    answered_by: Route = "cloud"

    def __init__(self, settings: Settings, open_client: Callable[[Settings], CloudClient]) -> None:
        self.settings, self.open_client = settings, open_client
        self.model = settings.cloud_model or ""

    def run(self, turn: Turn) -> Tried:
        with self.open_client(self.settings) as client:
            generated = generate_in_cloud(client, self.settings, turn.consulted.text, turn.consulted.hits,
                                          turn.history, turn.on_token, turn.cancel, turn.record_sent)
        return Tried(generated, "fall_back" if generated.fell_back else "final")


class LocalModelParts(LocalParts, Protocol):
    """What the local attempts need of the Assistant, beyond local+'s model, sampler and tuner."""

    notes: NotesIndex  # the notes check reads their term statistics
    model_name: str

    def prepare_local(self) -> list[str]:
        """Ready the model for an answer (the personal adapter on or off); notices to show."""
        ...

    def draft_check(self) -> DraftCheck | None:
        """The cascade's check for the local model in use, calibrated and up to date with feedback;
        None when no check was fitted for it."""
        ...


class LocalAttempt:
    """The local model: first the notes check ("my notes don't say"), then a draft that the cascade's
    check reads as it streams (assistant/cascade.py). `why_it_stays` is None when an unsure draft
    may escalate to the cloud; otherwise it says why the draft stays (offline, asked for local)."""

    answered_by: Route = "local"

    def __init__(self, parts: LocalModelParts, settings: Settings, why_it_stays: str | None = "",
                 check_drafts: bool = True) -> None:
        self.parts, self.settings = parts, settings
        self.why_it_stays, self.check_drafts = why_it_stays, check_drafts

    @property
    def model(self) -> str:
        # Read when needed: a question the cloud answers never needs a local model installed.
        return self.parts.model_name

    def run(self, turn: Turn) -> Tried:
        notices = self.parts.prepare_local()
        unsaid, abstention, plan = self.unless_the_notes_say(turn)
        if unsaid is not None:
            tried = Tried(unsaid, abstention=abstention)
        else:
            tried = self.answer(turn, plan)
            tried.abstention = abstention
        tried.generated.notices[:0] = notices
        return tried

    def answer(self, turn: Turn, plan: PromptPlan | None) -> Tried:
        consulted = turn.consulted
        plan = plan or plan_prompt(self.parts.model, consulted.text, consulted.hits, turn.history,
                                   max_answer_tokens=self.settings.max_tokens)
        check = self.parts.draft_check() if self.check_drafts else None
        if check is None:
            return Tried(stream_plan(self.parts.model, self.settings, plan, turn.on_token, turn.cancel))
        watch = DraftWatch(check, [hit.text for hit in plan.notes] if plan.notes else None,
                           stop_when_unsure=self.why_it_stays is None, cancel=turn.cancel)
        generated = stream_plan(self.parts.model, self.settings, plan, turn.on_token, turn.cancel,
                                confidence=watch.confidence, should_stop=watch.should_stop)
        if watch.escalates(turn.cancelled, generated.stop_reason):
            if watch.stopped:
                generated.stop_reason = "escalated"
            verdict = watch.escalated()
            return Tried(generated, "escalate", escalation_reason(verdict), draft_check=verdict)
        verdict = watch.finish(generated.stop_reason)
        if verdict.unsure and not turn.cancelled:
            generated.notices.append(unsure_notice(verdict, self.why_it_stays or "no cloud to ask"))
        return Tried(generated, draft_check=verdict)

    def unless_the_notes_say(self, turn: Turn) -> tuple[Generated | None, dict | None, PromptPlan | None]:
        """When the notes check applies and finds the notes do not hold the answer: the answer that
        says so (assistant/abstention.py); else None. The check's record either way, and the
        answer's prompt it planned, whose evaluation llama.cpp already holds."""
        consulted, model = turn.consulted, self.parts.model
        if not consulted.hits or not check_applies(self.settings.abstain, self.model):
            return None, None, None
        check = NotesCheck(self.parts.notes, model, consulted.text, consulted.candidates, consulted.coverage,
                           self.settings.abstain_threshold)
        plan = plan_prompt(model, consulted.text, consulted.hits, turn.history,
                           max_answer_tokens=self.settings.max_tokens)
        if not plan.notes or check(plan):
            return None, check.outcome, plan
        generated = general_answer(model, self.settings, consulted.text, turn.history, turn.on_token, turn.cancel)
        if self.settings.cloud_configured and not self.settings.offline:
            generated.notices.append(CLOUD_MAY_KNOW)
        return generated, check.outcome, None


class LocalPlusAttempt(LocalAttempt):
    """More local compute (a vote or a test-time LoRA, by difficulty) after the notes check. A vote
    whose samples disagree escalates, unless the cloud cannot take the question."""

    def __init__(self, parts: LocalModelParts, settings: Settings, cloud_unavailable: bool) -> None:
        super().__init__(parts, settings)
        self.cloud_unavailable = cloud_unavailable

    def answer(self, turn: Turn, plan: PromptPlan | None) -> Tried:
        generated, allocation, escalate = spend_local_compute(
            self.parts, self.settings, turn.consulted, turn.decision, turn.history, turn.on_token, turn.cancel,
            turn.on_progress, cloud_unavailable=self.cloud_unavailable)
        return Tried(generated, "escalate" if escalate else "final", escalate or "",
                     streamed=allocation["kind"] != "vote", allocation=allocation)


class FinishDraft(LocalAttempt):
    """An unsure draft escalated and the cloud fell back: the local model writes its answer in full
    after all (the notes check and the draft check have already run on this question)."""

    def __init__(self, parts: LocalModelParts, settings: Settings) -> None:
        super().__init__(parts, settings, why_it_stays="the cloud could not answer", check_drafts=False)

    def run(self, turn: Turn) -> Tried:
        return self.answer(turn, None)


def chain_for(route: Route, cloud_unreachable: str | None, asked_for: bool, local: LocalModelParts,
              settings: Settings, open_client: Callable[[Settings], CloudClient]) -> tuple[list[Attempt], list[str]]:
    """The attempts for a route, and what to say before they run. A question for the cloud that
    has to stay here (offline, no endpoint, a refusal) gets more local compute, as the hardest. A
    local draft the local model is unsure of escalates to the cloud, unless there is none to ask
    or the person asked for the local model (`asked_for`: the route was theirs, whether or not
    the router agreed)."""
    cloud: list[Attempt] = [CloudAttempt(settings, open_client)] if cloud_unreachable is None else []
    if route == "cloud":
        said = [why_no_cloud(settings)] if cloud_unreachable else []
        return [*cloud, LocalPlusAttempt(local, settings, cloud_unavailable=True)], said
    if route == "local+":
        return [LocalPlusAttempt(local, settings, cloud_unavailable=False), *cloud], []
    if asked_for:
        return [LocalAttempt(local, settings, why_it_stays="you asked for the local model")], []
    if cloud_unreachable is not None:
        return [LocalAttempt(local, settings, why_it_stays=cloud_unreachable)], []
    return [LocalAttempt(local, settings, why_it_stays=None), *cloud, FinishDraft(local, settings)], []
