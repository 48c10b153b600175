"""The answer pipeline: retrieve -> decide -> generate -> record. The library face of skiff:

    from skiff.router import Assistant
    assistant = Assistant()
    assistant.index(["~/notes"])
    answer = assistant.ask("How do I link notes?", on_token=print)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from skiff.local.assets import default_gguf_path
from skiff.local.embedder import Embedder
from skiff.local.llm import GenerationStats, LocalModel, read_model_info
from skiff.local.notes_index import Hit, IndexProgress, IndexSummary, NotesIndex
from skiff.router.coverage import sift_select
from skiff.router.feedback import FeedbackResult, give_feedback, sync
from skiff.router.policy import Decision, Question, Route, RoutePolicy
from skiff.router.prompting import plan_prompt
from skiff.router.records import AnswerStore, new_answer_id
from skiff.router.settings import Settings, config_file_path
from skiff.router.state import RouterState, Thresholds
from skiff.router.tuning import calibrate, keep_calibrated, router_stats
from skiff.router.uncertainty import UncertaintyRouter


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def location(self) -> str:
        if self.page is not None:
            return f"page {self.page}"
        if self.line_start == self.line_end:
            return f"line {self.line_start}"
        return f"lines {self.line_start}-{self.line_end}"


@dataclass
class Answer:
    id: str
    question: str
    text: str
    decision: Decision
    sources: list[Source]
    timings: dict[str, float | None]
    tokens: dict[str, int]
    stop_reason: str
    model: str
    notices: list[str] = field(default_factory=list)
    answered_by: Route = "local"  # who wrote the text (a cloud decision may fall back to local)

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
            "stop_reason": self.stop_reason,
            "model": self.model,
            "notices": self.notices,
        }


class Assistant:
    """Owns the heavy parts and loads each on first use, so opening it is instant."""

    def __init__(self, settings: Settings | None = None, policy: RoutePolicy | None = None) -> None:
        self.settings = settings or Settings()
        self.router_state = RouterState(self.settings.router_dir, self.settings.router_prior)
        self.policy = policy or UncertaintyRouter(
            self.router_state, beta=self.settings.router_beta, cloud_share=self.settings.cloud_share,
            local_plus_share=self.settings.local_plus_share,
        )
        self._router_prepared = False
        self._embedder: Embedder | None = None
        self._index: NotesIndex | None = None
        self._model: LocalModel | None = None
        self._records: AnswerStore | None = None
        self._load_lock = threading.Lock()

    # -- parts, loaded lazily ----------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        return Path(self.settings.model_path).expanduser() if self.settings.model_path else default_gguf_path()

    @property
    def embedder(self) -> Embedder:
        with self._load_lock:
            if self._embedder is None:
                self._embedder = Embedder(
                    self.settings.cache_dir, backend=self.settings.embedder_backend, n_threads=self.settings.n_threads
                )
            return self._embedder

    @property
    def notes(self) -> NotesIndex:
        embedder = self.embedder
        with self._load_lock:
            if self._index is None:
                self._index = NotesIndex(
                    self.settings.index_dir,
                    embedder,
                    chunk_tokens=self.settings.chunk_tokens,
                    max_file_bytes=int(self.settings.max_file_mb * 1024 * 1024),
                    batch_chunks=self.settings.index_batch_chunks,
                )
            return self._index

    @property
    def model(self) -> LocalModel:
        with self._load_lock:
            if self._model is None:
                self._model = LocalModel(
                    self.model_path, n_ctx=self.settings.n_ctx, n_threads=self.settings.n_threads, seed=self.settings.seed
                )
            return self._model

    @property
    def records(self) -> AnswerStore:
        with self._load_lock:
            if self._records is None:
                self._records = AnswerStore(self.settings.database_path)
            return self._records

    def close(self) -> None:
        for part in (self._index, self._model, self._records):
            if part is not None:
                part.close()

    # -- indexing ------------------------------------------------------------------------------

    def index(
        self,
        paths: Sequence[str | Path] | None = None,
        progress: Callable[[IndexProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexSummary:
        """Index `paths`, or re-index every folder indexed before when none are given."""
        targets = [str(p) for p in paths] if paths else self.notes.roots()
        return self.notes.index(targets, progress=progress, cancel=cancel)

    # -- answering -----------------------------------------------------------------------------

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        """The note chunks SIFT selects for `question` (see consult_notes)."""
        return list(self.consult_notes(question, k=k).hits)

    def consult_notes(self, question: str, k: int | None = None, use_notes: bool = True) -> Question:
        """Embed the question, take the index's top-K candidates, let SIFT pick k of them: relevant
        and not redundant. The variance left, σ², is the router's coverage signal."""
        k = self.settings.top_k if k is None else k
        embedding = self.embedder.encode_query(question)
        if not use_notes:
            return Question(question, embedding, [], None)
        candidates = self.notes.search(embedding, max(k, self.settings.sift_candidates), with_embeddings=True)
        if not candidates:
            return Question(question, embedding, [], 1.0)
        coverage = sift_select(embedding, np.stack([c.embedding for c in candidates]), k,
                               lam=self.settings.sift_lambda)
        return Question(question, embedding, [candidates[i] for i in coverage.selected], coverage.variance)

    def decide(self, question: str, use_notes: bool = True) -> Decision:
        """Where `question` would go and why, without answering it (nothing is recorded)."""
        self._prepare_router()
        return self.policy.decide(self.consult_notes(question.strip(), use_notes=use_notes))

    def ask(
        self,
        question: str,
        history: Sequence[dict] = (),
        use_notes: bool = True,
        route: Route | None = None,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Answer:
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        started = time.perf_counter()
        consulted = self.consult_notes(question, use_notes=use_notes)
        hits = consulted.hits
        retrieved_at = time.perf_counter()

        self._prepare_router()
        decision = self.policy.decide(consulted)
        decided_at = time.perf_counter()
        if route is not None and route != decision.route:
            decision = decision.overridden_to(route)
        notices: list[str] = []
        answered_by: Route = decision.route
        if decision.route == "cloud":
            # The cloud client arrives with the cloud issue; say so rather than fail.
            notices.append("no cloud endpoint is configured; answered by the local model")
            answered_by = "local"

        answer_id = new_answer_id()
        self.records.start(answer_id, question, decision, answered_by, self.model_path.name)

        model = self.model
        plan = plan_prompt(model, question, hits, history, max_answer_tokens=self.settings.max_tokens)
        if plan.truncated:
            notices.append(f"trimmed to fit the {model.n_ctx}-token context: {', '.join(plan.truncated)}")
        stats = GenerationStats()
        pieces: list[str] = []
        first_piece_at: float | None = None
        try:
            for piece in model.stream(
                plan.prompt_tokens,
                max_tokens=self.settings.max_tokens,
                temperature=self.settings.temperature,
                stats=stats,
                should_stop=cancel.is_set if cancel is not None else None,
            ):
                if first_piece_at is None:
                    first_piece_at = time.perf_counter()
                pieces.append(piece)
                if on_token is not None:
                    on_token(piece)
        finally:
            text = "".join(pieces)
            sources = [
                Source(n, hit.path, hit.title, hit.section, hit.line_start, hit.line_end, hit.page,
                       round(1.0 - hit.distance, 4))
                for n, hit in enumerate(plan.notes, start=1)
            ]
            finished = time.perf_counter()
            timings = {
                "retrieve_s": round(retrieved_at - started, 4),
                "decide_s": round(decided_at - retrieved_at, 4),
                "first_token_s": round(first_piece_at - started, 4) if first_piece_at is not None else None,
                "total_s": round(finished - started, 4),
                "decode_tokens_per_s": round(stats.decode_tokens_per_s, 2) if stats.decode_tokens_per_s else None,
            }
            tokens = {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens}
            self.records.finish(answer_id, text, [s.as_dict() for s in sources], timings, tokens,
                                stats.stop_reason or "error")
        return Answer(answer_id, question, text, decision, sources, timings, tokens, stats.stop_reason,
                      self.model_path.name, notices, answered_by)

    # -- learning ------------------------------------------------------------------------------

    def feedback(self, verdict: str, answer_id: str | None = None) -> FeedbackResult:
        """good/bad on an answer (the latest when no id is given); the router learns from it."""
        return give_feedback(self.records, self.router_state, verdict, answer_id)

    def reset_router(self) -> None:
        """Forget what the router learned from feedback (the history stays in the database)."""
        self.router_state.reset(self.records.last_feedback_event())

    def calibrate(self, cloud_share: float | None = None, local_plus_share: float | None = None) -> Thresholds:
        """Thresholds that send `cloud_share` of recent questions to the cloud (router/tuning.py)."""
        return calibrate(self.records, self._uncertainty_router(), self.embedder.encode, cloud_share, local_plus_share)

    def router_stats(self) -> dict:
        return router_stats(self.records, self._uncertainty_router())

    def _uncertainty_router(self) -> UncertaintyRouter:
        if not isinstance(self.policy, UncertaintyRouter):
            raise ValueError("this assistant was given another routing policy")
        return self.policy

    def _prepare_router(self) -> None:
        if not self._router_prepared:
            # Events written by a process that died before its posterior write are absorbed here.
            sync(self.records, self.router_state)
            self._router_prepared = True
        if isinstance(self.policy, UncertaintyRouter):
            keep_calibrated(self.records, self.policy, self.embedder.encode)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict:
        settings = self.settings
        try:
            model_path = self.model_path
            model = read_model_info(model_path).as_dict() if model_path.is_file() else {"error": f"not found: {model_path}"}
        except Exception as error:  # noqa: BLE001 - status must report, not crash
            model = {"error": str(error)}
        files, chunks = self.notes.totals() if settings.index_dir.exists() else (0, 0)
        cloud = "none"
        if settings.cloud_base_url:
            cloud = "offline" if settings.offline else settings.cloud_base_url
        return {
            "config_file": str(config_file_path()),
            "config_file_exists": config_file_path().is_file(),
            "data_dir": str(settings.data_dir),
            "cache_dir": str(settings.cache_dir),
            "model": model,
            "index": {"files": files, "chunks": chunks, "roots": self.notes.roots() if settings.index_dir.exists() else []},
            "answers": self.records.count() if settings.database_path.exists() else 0,
            "cloud": cloud,
            "offline": settings.offline,
        }
