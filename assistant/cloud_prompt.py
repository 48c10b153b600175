"""Sending a question to the cloud: whether we may, what leaves the machine (the question, the
trimmed chat history and the selected note chunks, minus what privacy.py keeps here), and what
it cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from skiff.cloud import CloudClient, CloudTimeouts, estimate_tokens
from skiff.local.notes_index import Hit
from skiff.assistant.prompting import PromptPlan, plan_prompt
from skiff.assistant.privacy import WITHHELD_TURN, drew_on_private_notes, is_private
from skiff.config.settings import KeyFileError, Settings


def cloud_unreachable(settings: Settings) -> str | None:
    """Why the cloud cannot be asked now, in a few words, or None when it can."""
    if settings.offline:
        return "offline mode"
    if not settings.cloud_configured:
        return "no cloud endpoint is configured (cloud_base_url, cloud_model)"
    try:
        settings.cloud_key()
    except KeyFileError as error:
        return str(error)
    return None


def why_no_cloud(settings: Settings) -> str | None:
    """Why a question meant for the cloud is answered here (said to the person as a notice), or
    None when the cloud can be asked."""
    reason = cloud_unreachable(settings)
    if reason is None:
        return None
    if settings.offline:
        return "offline mode: this question would have gone to the cloud; answered locally"
    return f"{reason}; answered locally"


def open_cloud_client(settings: Settings) -> CloudClient:
    """A client for the configured endpoint (why_no_cloud says whether there is one); its user
    closes it."""
    timeouts = CloudTimeouts(settings.cloud_connect_timeout_s, settings.cloud_first_token_timeout_s,
                             settings.cloud_total_timeout_s)
    return CloudClient(settings.cloud_base_url or "", settings.cloud_model or "", settings.cloud_key(), timeouts,
                       retries=settings.cloud_retries)


class EstimatedTokens:
    """plan_prompt's ChatModel for a remote model whose tokenizer is not here: counts by the
    four-characters-a-token estimate, with the endpoint's context window."""

    def __init__(self, n_ctx: int) -> None:
        self.n_ctx = n_ctx

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def count_chat_tokens(self, messages: Sequence[dict]) -> int:
        return sum(estimate_tokens(m["content"]) + 4 for m in messages)

    def render(self, messages: Sequence[dict]) -> str:
        return "\n".join(f"<{m['role']}>\n{m['content']}" for m in messages)

    def tokenize_prompt(self, prompt: str) -> list[int]:
        return [0] * estimate_tokens(prompt)


@dataclass(frozen=True)
class CloudPrompt:
    plan: PromptPlan
    withheld: int  # private chunks kept on the machine
    turns_withheld: int = 0  # earlier answers drawn from private notes, sent as a placeholder

    def sent_record(self, base_url: str, model: str) -> dict:
        """What left the machine, as stored with the answer and shown by `skiff show`."""
        return {"endpoint": base_url, "model": model, "messages": self.plan.messages,
                "notes": [hit.path for hit in self.plan.notes], "private_notes_withheld": self.withheld,
                "history_turns_withheld": self.turns_withheld}


def plan_cloud_prompt(settings: Settings, question: str, hits: Sequence[Hit], history: Sequence[dict]) -> CloudPrompt:
    shareable = [hit for hit in hits if not is_private(hit, settings.private_paths)]
    private_turns = [drew_on_private_notes(turn, settings.private_paths) for turn in history]
    turns = [{**turn, "content": WITHHELD_TURN} if private else turn for turn, private in zip(history, private_turns)]
    plan = plan_prompt(EstimatedTokens(settings.cloud_context_tokens), question, shareable, turns,
                       max_answer_tokens=settings.cloud_max_tokens)
    return CloudPrompt(plan, len(hits) - len(shareable), sum(private_turns))


def cloud_cost(settings: Settings, prompt_tokens: int, completion_tokens: int) -> float:
    return round((prompt_tokens * settings.cloud_price_in_per_mtok
                  + completion_tokens * settings.cloud_price_out_per_mtok) / 1e6, 8)
