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
from dataclasses import dataclass, field, replace
from typing import Callable, Literal, Protocol, Sequence

from skiff.assistant.abstention import NotesCheck, check_applies
from skiff.assistant.adapter_spec import TuningProgress
from skiff.assistant.answering import Generated, general_answer, generate_in_cloud, stream_plan
from skiff.assistant.cascade import DraftWatch, escalation_reason, unsure_notice
from skiff.assistant.cloud_prompt import why_no_cloud
from skiff.assistant.allocation import Allocation, allocate
from skiff.assistant.local_gate import LocalGate, WaitCancelled
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
    escalated: Generated | None = None  # what the attempt that escalated wrote (set by run_attempts)
    queue_wait_s: float = 0.0  # waited for the local model while other answers held it

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
    set_aside: str | None = None  # a draft this attempt replaced with a better answer of its own


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
            turn.escalated = tried.generated
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
    draft = draft or tried.set_aside or (kept[1].set_aside if kept is not None else None)
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
    local_gate: LocalGate  # whose turn it is to write with the local model

    def prepare_local(self) -> list[str]:
        """Ready the model for an answer (the personal adapter on or off); notices to show."""
        ...

    def draft_check(self) -> DraftCheck | None:
        """The cascade's check for the local model in use, calibrated and up to date with feedback;
        None when no check was fitted for it."""
        ...

    def local_plus_measured(self) -> dict:
        """What each local+ method was measured to gain with the model in use (allocation.py)."""
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
        # An answer that already showed text (a draft that escalated) finishes however long the line.
        try:
            with self.parts.local_gate.hold(turn.cancel, may_refuse=turn.escalated is None) as waited:
                turn.queue_wait_s += waited
                return self.write(turn)
        except WaitCancelled:
            return Tried(Generated(stop_reason="cancelled"))

    def write(self, turn: Turn) -> Tried:
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
        plan = plan or self.plan(turn)
        generated, watch = self.draft(turn, plan, stop_when_unsure=self.why_it_stays is None)
        if watch is None:
            return Tried(generated)
        if watch.escalates(turn.cancelled, generated.stop_reason):
            return self.escalate(generated, watch)
        return self.keep(turn, generated, watch.finish(generated.stop_reason))

    def plan(self, turn: Turn) -> PromptPlan:
        consulted = turn.consulted
        return plan_prompt(self.parts.model, consulted.text, consulted.hits, turn.history,
                           max_answer_tokens=self.settings.max_tokens)

    def draft(self, turn: Turn, plan: PromptPlan, stop_when_unsure: bool) -> tuple[Generated, DraftWatch | None]:
        """The local model's answer, read by the draft check as it streams (None: no check)."""
        check = self.parts.draft_check() if self.check_drafts else None
        if check is None:
            return stream_plan(self.parts.model, self.settings, plan, turn.on_token, turn.cancel), None
        watch = DraftWatch(check, [hit.text for hit in plan.notes] if plan.notes else None,
                           stop_when_unsure=stop_when_unsure, cancel=turn.cancel)
        generated = stream_plan(self.parts.model, self.settings, plan, turn.on_token, turn.cancel,
                                confidence=watch.confidence, should_stop=watch.should_stop)
        return generated, watch

    def escalate(self, generated: Generated, watch: DraftWatch) -> Tried:
        if watch.stopped:
            generated.stop_reason = "escalated"
        verdict = watch.escalated()
        return Tried(generated, "escalate", escalation_reason(verdict), draft_check=verdict)

    def keep(self, turn: Turn, generated: Generated, verdict: DraftVerdict) -> Tried:
        """The draft is the answer; an unsure one is marked so, with why it stays."""
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
    """A draft first, read by the draft check; then more local compute where it was measured to
    pay for this kind of question at the draft's confidence, or where the person asked for it
    (assistant/allocation.py). Where nothing pays, the draft is the answer: an unsure one escalates
    when the cloud can take it, else stays marked unsure. A vote whose samples disagree escalates
    too, unless the cloud cannot take the question."""

    def __init__(self, parts: LocalModelParts, settings: Settings, cloud_unavailable: bool, asked_for: bool = False,
                 why_it_stays: str | None = None) -> None:
        super().__init__(parts, settings, why_it_stays=(why_it_stays or "no cloud to ask") if cloud_unavailable
                         else None)
        self.cloud_unavailable, self.asked_for = cloud_unavailable, asked_for

    def allocation(self, turn: Turn, unsure: bool) -> Allocation:
        consulted, s = turn.consulted, self.settings
        return allocate(consulted.text, bool(consulted.candidates), unsure, self.parts.local_plus_measured(),
                        s.local_plus_methods, self.asked_for, turn.decision.difficulty or 0.0,
                        (s.vote_min_samples, s.vote_max_samples))

    def answer(self, turn: Turn, plan: PromptPlan | None) -> Tried:
        plan = plan or self.plan(turn)
        if_unsure = self.allocation(turn, unsure=True)
        # An unsure draft stops at the early reading unless what follows needs all of it (a vote).
        stop_early = if_unsure.kind in ("context", "lora") or (if_unsure.kind == "plain" and not self.cloud_unavailable)
        generated, watch = self.draft(turn, plan, stop_when_unsure=stop_early)
        verdict = watch.finish(generated.stop_reason) if watch is not None else None
        if turn.cancelled:
            return Tried(generated, draft_check=verdict)
        # Without a check, the route is the reason this question is here: it counts as unsure.
        unsure = verdict.unsure if verdict is not None else True
        allocation = if_unsure if unsure else self.allocation(turn, unsure=False)
        if allocation.kind != "plain":
            return self.spend(turn, plan, generated, verdict, allocation)
        if watch is None:
            tried = Tried(generated)
        elif unsure and not self.cloud_unavailable:
            tried = self.escalate(generated, watch)
        else:
            tried = self.keep(turn, generated, verdict)
        if turn.decision.route == "local+":  # sent here for more compute: say why none was spent
            tried.allocation = allocation.as_dict()
        return tried

    def spend(self, turn: Turn, plan: PromptPlan, draft: Generated, verdict: DraftVerdict | None,
              allocation: Allocation) -> Tried:
        """The allocated method after the draft. What replaces the draft sets it aside first (a vote
        only once it is decided), so the person sees the draft folded and why."""
        reason = f"{verdict.reason if verdict is not None else 'more local compute'}: {allocation.reason}"
        if allocation.kind != "vote" and draft.text and turn.on_set_aside is not None:
            turn.on_set_aside(reason)
        spent = spend_local_compute(self.parts, self.settings, allocation, turn.consulted, plan, draft, turn.history,
                                    turn.on_token, turn.cancel, turn.on_progress, self.cloud_unavailable,
                                    turn.decision.overridden)
        if allocation.kind == "vote" and spent.replaces_draft and draft.text and turn.on_set_aside is not None:
            turn.on_set_aside(reason)
        if verdict is not None and spent.replaces_draft:
            verdict = replace(verdict, replaced_by=allocation.kind)
        return Tried(spent.generated, "escalate" if spent.escalate else "final", spent.escalate or "",
                     streamed=spent.streamed, allocation=spent.record, draft_check=verdict,
                     set_aside=draft.text if spent.replaces_draft and draft.text else None)


class FinishDraft(LocalAttempt):
    """An unsure draft escalated and the cloud fell back: the local model writes its answer in full
    after all (the notes check and the draft check have already run on this question)."""

    def __init__(self, parts: LocalModelParts, settings: Settings) -> None:
        super().__init__(parts, settings, why_it_stays="the cloud could not answer", check_drafts=False)

    def run(self, turn: Turn) -> Tried:
        if turn.escalated is not None and turn.escalated.stop_reason != "escalated":
            # The draft was finished before it escalated: shown again as the answer, not rewritten.
            return Tried(replace(turn.escalated, notices=[]), streamed=False)
        return super().run(turn)

    def write(self, turn: Turn) -> Tried:
        return self.answer(turn, None)


def chain_for(route: Route, cloud_unreachable: str | None, asked_for: bool, local: LocalModelParts,
              settings: Settings, open_client: Callable[[Settings], CloudClient]) -> tuple[list[Attempt], list[str]]:
    """The attempts for a route, and what to say before they run. A local draft the local model is
    unsure of escalates to the cloud, unless there is none to ask (offline, no endpoint, a cloud
    question the cloud refused): then it gets more local compute where that was measured to pay.
    A local answer the person asked for stays as it is (`asked_for`: the route was theirs, whether
    or not the router agreed); more local compute they asked for is spent even where it did not pay."""
    cloud: list[Attempt] = [CloudAttempt(settings, open_client)] if cloud_unreachable is None else []
    if route == "cloud":
        said = [why_no_cloud(settings)] if cloud_unreachable else []
        return [*cloud, LocalPlusAttempt(local, settings, cloud_unavailable=True,
                                         why_it_stays=cloud_unreachable or "the cloud could not answer")], said
    if route == "local+":
        return [LocalPlusAttempt(local, settings, cloud_unavailable=cloud_unreachable is not None, asked_for=asked_for,
                                 why_it_stays=cloud_unreachable), *cloud, FinishDraft(local, settings)], []
    if asked_for:
        return [LocalAttempt(local, settings, why_it_stays="you asked for the local model")], []
    if cloud_unreachable is not None:
        # No cloud to ask: an unsure draft gets more local compute where that was measured to pay.
        return [LocalPlusAttempt(local, settings, cloud_unavailable=True, why_it_stays=cloud_unreachable)], []
    return [LocalAttempt(local, settings, why_it_stays=None), *cloud, FinishDraft(local, settings)], []
