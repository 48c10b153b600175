"""The local+ route's two ways of spending more compute on the machine: a vote over several
sampled answers, and an answer from the local model with a test-time LoRA attached."""

from __future__ import annotations

import threading
from typing import Callable, Protocol, Sequence

from skiff.local.llm import LocalModel
from skiff.local.sampling import ParallelSampler, SamplingStats
from skiff.assistant.allocation import allocate
from skiff.assistant.answering import Generated, generate_locally
from skiff.router.policy import Decision, QuestionWithNotes
from skiff.assistant.prompting import plan_prompt
from skiff.config.settings import Settings
from skiff.assistant.adapter_spec import TuningProgress
from skiff.assistant.question_adapter import QuestionTuner, select_training_chunks
from skiff.assistant.voting import Vote, lettered_options, majority_vote


def sample_and_vote(model: LocalModel, sampler: ParallelSampler, settings: Settings, consulted: QuestionWithNotes,
                    history: Sequence[dict], samples: int, cancel: threading.Event | None,
                    progress: TuningProgress | None) -> tuple[Generated, Vote]:
    """`samples` answers decoded together, then a majority vote. Nothing is shown yet: the caller
    decides whether the vote is confident enough to keep (see Assistant)."""
    plan = plan_prompt(model, consulted.text, consulted.hits, history, max_answer_tokens=settings.max_tokens)
    generated = Generated(notes=list(plan.notes))
    if (trimmed := plan.trimmed_notice(model.n_ctx)) is not None:
        generated.notices.append(trimmed)
    stats = SamplingStats()
    drafts = sampler.sample(plan.prompt_tokens, samples, settings.max_tokens, temperature=settings.vote_temperature,
                            seed=settings.seed, should_stop=cancel.is_set if cancel is not None else None,
                            on_step=(lambda done, total: progress("sample", done, total)) if progress else None,
                            stats=stats)
    if stats.capped_to is not None:
        generated.notices.append(f"the context held only {stats.capped_to} tokens per sample")
    vote = majority_vote([draft.text for draft in drafts], lettered_options(consulted.text))
    chosen = drafts[vote.chosen]
    generated.text = chosen.text
    generated.stop_reason = chosen.stop_reason
    generated.prompt_tokens, generated.completion_tokens = stats.prompt_tokens, stats.completion_tokens
    generated.decode_tokens_per_s = stats.completion_tokens / stats.seconds if stats.seconds else None
    return generated, vote


def answer_with_adapter(model: LocalModel, tuner: QuestionTuner, settings: Settings, consulted: QuestionWithNotes,
                        history: Sequence[dict], on_token: Callable[[str], None] | None,
                        cancel: threading.Event | None, progress: TuningProgress | None) -> tuple[Generated, dict]:
    """Train a fresh LoRA on the chunks SIFT selects for the question, answer with it attached,
    then detach it (the next question sees the untouched model) and delete its file."""
    selection = select_training_chunks(consulted.embedding, consulted.candidates, settings.ttt_alpha,
                                       settings.ttt_max_steps, settings.sift_lambda)
    tuned = tuner.adapt(selection, progress, cancel, base=model.base_adapter)
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


class LocalParts(Protocol):
    """What local+ needs of the Assistant: the model and, loaded on first use, the sampler and tuner."""

    model: LocalModel
    sampler: ParallelSampler
    tuner: QuestionTuner


def spend_local_compute(parts: LocalParts, settings: Settings, consulted: QuestionWithNotes, decision: Decision,
                        history: Sequence[dict], on_token: Callable[[str], None] | None,
                        cancel: threading.Event | None, on_progress: TuningProgress | None,
                        cloud_unavailable: bool) -> tuple[Generated, dict, str | None]:
    """Allocate by difficulty and run it. Returns the answer, the allocation as recorded, and a
    reason to escalate to the cloud instead (a vote whose samples disagree), or None. A vote's
    answer is not shown yet (the caller shows it or escalates); a LoRA answer streams as usual."""
    allocation = allocate(consulted.text, decision.difficulty, bool(consulted.candidates), settings.vote_min_samples,
                          settings.vote_max_samples, cloud_unavailable)
    record = allocation.as_dict()
    if allocation.kind == "vote":
        sampler = parts.sampler
        generated, vote = sample_and_vote(parts.model, sampler, settings, consulted, history,
                                          min(allocation.samples, sampler.max_sequences), cancel, on_progress)
        record["vote"] = vote.as_dict()
        escalate = None
        if vote.agreement < settings.vote_escalate_below and not cloud_unavailable and not decision.overridden:
            escalate = (
                f"the {vote.samples} local samples agreed only {vote.count}/{vote.samples}: asked the cloud instead"
            )
        return generated, record, escalate
    if allocation.kind == "lora":
        generated, record["training"] = answer_with_adapter(parts.model, parts.tuner, settings, consulted, history,
                                                            on_token, cancel, on_progress)
        return generated, record, None
    generated = generate_locally(parts.model, settings, consulted.text, consulted.hits, history, on_token, cancel)
    return generated, record, None
