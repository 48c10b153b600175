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

from skiff.local.assets import default_gguf_path
from skiff.local.embedder import Embedder
from skiff.local.llm import GenerationStats, LocalModel, read_model_info
from skiff.local.notes_index import Hit, IndexProgress, IndexSummary, NotesIndex
from skiff.router.policy import AlwaysLocal, Decision, Route, RoutePolicy
from skiff.router.prompting import plan_prompt
from skiff.router.records import AnswerStore, new_answer_id
from skiff.router.settings import Settings, config_file_path


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

    @property
    def route(self) -> Route:
        return self.decision.route

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.text,
            "route": self.route,
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
        self.policy = policy or AlwaysLocal()
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
        k = self.settings.top_k if k is None else k
        if k <= 0:
            return []
        return self.notes.search(self.embedder.encode_query(question), k)

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
        hits = self.retrieve(question) if use_notes else []
        retrieved_at = time.perf_counter()

        decision = self.policy.decide(question, hits)
        if route is not None and route != decision.route:
            decision = Decision(route, f"{route} by request (router said {decision.route}: {decision.reason})",
                                decision.signals, overridden=True)
        notices: list[str] = []
        if decision.route == "cloud":
            # The cloud client arrives with the cloud issue; say so rather than fail.
            notices.append("no cloud endpoint is configured; answered by the local model")

        answer_id = new_answer_id()
        self.records.start(answer_id, question, decision.route, decision.reason, decision.signals, self.model_path.name)

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
                "first_token_s": round(first_piece_at - started, 4) if first_piece_at is not None else None,
                "total_s": round(finished - started, 4),
                "decode_tokens_per_s": round(stats.decode_tokens_per_s, 2) if stats.decode_tokens_per_s else None,
            }
            tokens = {"prompt": stats.prompt_tokens, "completion": stats.completion_tokens}
            self.records.finish(answer_id, text, [s.as_dict() for s in sources], timings, tokens,
                                stats.stop_reason or "error")
        return Answer(answer_id, question, text, decision, sources, timings, tokens, stats.stop_reason,
                      self.model_path.name, notices)

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
