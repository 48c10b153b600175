"""The local+ route's ways of spending more compute on the machine once a draft is written (the
choice among them is assistant/allocation.py's): a vote of the draft and sampled answers (on the
number or letter they give, or, for free text, the answer most like the others), an answer with
more notes in context, and an answer with a test-time LoRA attached."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from skiff.assistant.adapter_spec import TuningProgress
from skiff.assistant.allocation import Allocation
from skiff.assistant.answering import Generated, generate_locally
from skiff.assistant.prompting import PromptPlan, plan_prompt
from skiff.assistant.question_adapter import QuestionTuner, TrainingSelection, select_training_chunks
from skiff.assistant.voting import Vote, consensus_vote, has_extractable_answer, lettered_options, majority_vote
from skiff.config.settings import Settings
from skiff.local.llm import LocalModel
from skiff.local.notes_index import Hit
from skiff.local.sampling import ParallelSampler, SamplingStats
from skiff.router.policy import QuestionWithNotes


class LocalParts(Protocol):
    """What local+ needs of the Assistant: the model and, loaded on first use, the sampler and tuner."""

    model: LocalModel
    sampler: ParallelSampler
    tuner: QuestionTuner


@dataclass
class Spent:
    """What a local+ method came to: the answer to show, whether it replaces the draft, and what
    the person sees about the work (the allocation as recorded)."""

    generated: Generated
    record: dict
    replaces_draft: bool = True
    streamed: bool = True  # its text went to on_token as it was written
    escalate: str | None = None  # a vote whose samples disagree: why the cloud should answer instead


def vote_with_draft(model: LocalModel, sampler: ParallelSampler, settings: Settings, plan: PromptPlan,
                    draft: Generated, samples: int, options: Sequence[str], free_text: bool,
                    cancel: threading.Event | None, progress: TuningProgress | None) -> tuple[Generated, Vote]:
    """`samples` more answers decoded together, then a vote with the draft counted first (ties
    keep the draft): the majority of the numbers or letters they give, or, for free text, the
    answer most like the others. Nothing is shown yet: the caller shows the winner or escalates."""
    stats = SamplingStats()
    drawn = sampler.sample(plan.prompt_tokens, samples, settings.max_tokens, temperature=settings.vote_temperature,
                           seed=settings.seed, should_stop=cancel.is_set if cancel is not None else None,
                           on_step=(lambda done, total: progress("sample", done, total)) if progress else None,
                           stats=stats)
    texts = [draft.text] + [sample.text for sample in drawn]
    vote = consensus_vote(texts) if free_text else majority_vote(texts, options)
    if vote.chosen == 0:
        return draft, vote
    chosen = drawn[vote.chosen - 1]
    generated = Generated(text=chosen.text, notes=list(plan.notes), stop_reason=chosen.stop_reason,
                          prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
                          decode_tokens_per_s=stats.completion_tokens / stats.seconds if stats.seconds else None)
    if stats.capped_to is not None:
        generated.notices.append(f"the context held only {stats.capped_to} tokens per sample")
    return generated, vote


def training_chunks(settings: Settings, consulted: QuestionWithNotes) -> TrainingSelection:
    """The chunks SIFT picks for the question (adaptive stopping): what a test-time LoRA trains on,
    and what "more notes in context" adds to the prompt."""
    return select_training_chunks(consulted.embedding, consulted.candidates, settings.ttt_alpha,
                                  settings.ttt_max_steps, settings.sift_lambda)


def with_more_notes(hits: Sequence[Hit], extra: Sequence[Hit]) -> list[Hit]:
    seen = {hit.id for hit in hits}
    return list(hits) + [hit for hit in extra if hit.id not in seen]


def answer_with_more_notes(model: LocalModel, settings: Settings, consulted: QuestionWithNotes,
                           history: Sequence[dict], on_token: Callable[[str], None] | None,
                           cancel: threading.Event | None) -> tuple[Generated, dict]:
    """The answer again, from the retrieved notes and, after them, SIFT's picks for a LoRA (the
    prompt trims what does not fit the context)."""
    selection = training_chunks(settings, consulted)
    plan = plan_prompt(model, consulted.text, with_more_notes(consulted.hits, selection.chunks), history,
                       max_answer_tokens=settings.max_tokens)
    generated = generate_locally(model, settings, consulted.text, plan.notes, history, on_token, cancel, plan)
    return generated, {"notes_added": len(plan.notes) - min(len(consulted.hits), len(plan.notes)),
                       "notes_in_prompt": len(plan.notes), "stop": selection.reason}


def answer_with_adapter(model: LocalModel, tuner: QuestionTuner, settings: Settings, consulted: QuestionWithNotes,
                        history: Sequence[dict], on_token: Callable[[str], None] | None,
                        cancel: threading.Event | None, progress: TuningProgress | None) -> tuple[Generated, dict]:
    """Train a fresh LoRA on the chunks SIFT selects for the question, answer with it attached,
    then detach it (the next question sees the untouched model) and delete its file."""
    tuned = tuner.adapt(training_chunks(settings, consulted), progress, cancel, base=model.base_adapter)
    detail = tuned.as_dict()
    if tuned.cancelled:
        return Generated(stop_reason="cancelled", notices=["cancelled while training the adapter"]), detail
    if tuned.path is None:
        generated = generate_locally(model, settings, consulted.text, consulted.hits, history, on_token, cancel)
        generated.notices.append("no note chunks to train on: answered without an adapter")
        return generated, detail
    try:
        with model.adapter(tuned.path):
            return generate_locally(model, settings, consulted.text, consulted.hits, history, on_token, cancel), detail
    finally:
        tuned.path.unlink(missing_ok=True)


def spend_local_compute(parts: LocalParts, settings: Settings, allocation: Allocation, consulted: QuestionWithNotes,
                        plan: PromptPlan, draft: Generated, history: Sequence[dict],
                        on_token: Callable[[str], None] | None, cancel: threading.Event | None,
                        on_progress: TuningProgress | None, cloud_unavailable: bool, overridden: bool) -> Spent:
    """Run the allocated method after the draft. A vote shows nothing until it is decided; the other
    methods stream a new answer, so the caller sets the draft aside before calling."""
    record = allocation.as_dict()
    if allocation.kind == "vote":
        sampler = parts.sampler
        samples = max(1, min(allocation.samples - 1, sampler.max_sequences))
        generated, vote = vote_with_draft(parts.model, sampler, settings, plan, draft, samples,
                                          lettered_options(consulted.text),
                                          not has_extractable_answer(consulted.text), cancel, on_progress)
        record["vote"] = vote.as_dict()
        escalate = None
        if vote.agreement < settings.vote_escalate_below and not cloud_unavailable and not overridden:
            escalate = f"the draft and {vote.samples - 1} samples agreed only {vote.count}/{vote.samples}: " \
                       "asked the cloud instead"
        return Spent(generated, record, replaces_draft=vote.chosen != 0, streamed=vote.chosen == 0, escalate=escalate)
    if allocation.kind == "context":
        generated, record["context"] = answer_with_more_notes(parts.model, settings, consulted, history, on_token,
                                                              cancel)
        return Spent(generated, record)
    generated, record["training"] = answer_with_adapter(parts.model, parts.tuner, settings, consulted, history,
                                                        on_token, cancel, on_progress)
    return Spent(generated, record)
