"""The answer pipeline: retrieve -> decide -> generate -> record. The library face of skiff:

    from skiff.assistant import Assistant
    assistant = Assistant()
    assistant.index(["~/notes"])
    answer = assistant.ask("How do I link notes?", on_token=print)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Sequence


from skiff.assistant.adapter_spec import TuningProgress, lora_spec
from skiff.assistant.answer import Answer, Source, unknown_citations_notice
from skiff.assistant.answering import Generated
from skiff.assistant.attempts import Attempted, Turn, chain_for, run_attempts
from skiff.assistant.cloud_prompt import cloud_unreachable, open_cloud_client, why_no_cloud
from skiff.assistant.learning import Learning
from skiff.assistant.tuning import Tuning
from skiff.assistant.local_gate import LocalBusy, LocalGate
from skiff.assistant.model_choice import ModelInstallError, catalog, current_model
from skiff.assistant.model_choice import use as use_model
from skiff.assistant.question_adapter import QuestionTuner
from skiff.assistant.retrieval import RetrievalConfig, retrieve
from skiff.assistant.status_report import describe
from skiff.cloud import CloudClient
from skiff.config.settings import Settings
from skiff.local.embedder import Embedder
from skiff.local.llm import LocalModel
from skiff.local.notes_index import Hit, IndexProgress, IndexSummary, NotesIndex
from skiff.local.readers import source_lines
from skiff.local.recovery import DiskFullError, disk_full
from skiff.local.sampling import ParallelSampler
from skiff.router.draft_check import DraftCheck
from skiff.router.policy import Decision, QuestionWithNotes, Route, RoutePolicy
from skiff.router.records import AnswerStore, DraftRecord, new_answer_id
from skiff.router.state import RouterState
from skiff.router.uncertainty import UncertaintyRouter

# A question asked again on the other model within this window pairs with the earlier answer.
PAIR_WINDOW_S = 24 * 3600.0


class Assistant(Learning, Tuning):
    """Owns the heavy parts and loads each on first use, so opening it is instant.

    Each part may be given instead (a library user's own, or a test's scripted stand-in): the
    local model (anything with LocalModel's methods), the embedder, the notes index, and the
    function that opens a cloud client."""

    def __init__(self, settings: Settings | None = None, policy: RoutePolicy | None = None, *,
                 model: LocalModel | None = None, embedder: Embedder | None = None, notes: NotesIndex | None = None,
                 open_cloud_client: Callable[[Settings], CloudClient] = open_cloud_client) -> None:
        self.settings = settings or Settings()
        self.router_state = RouterState(self.settings.router_dir, self.settings.router_prior)
        self.policy = policy or UncertaintyRouter(
            self.router_state, beta=self.settings.router_beta, cloud_share=self.settings.cloud_share,
            local_plus_share=self.settings.local_plus_share,
            before_draft_share=self.settings.cloud_share_before_draft if self.settings.check_drafts else None,
        )
        self._router_prepared = False
        self._embedder: Embedder | None = embedder
        self._index: NotesIndex | None = notes
        self._model: LocalModel | None = model
        self._model_given = model is not None
        self.open_cloud_client = open_cloud_client
        self._records: AnswerStore | None = None
        self._sampler: ParallelSampler | None = None
        self._tuner: QuestionTuner | None = None
        self._load_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._router_lock = threading.Lock()  # the router's state is read and learned one question at a time
        # Local attempts take turns with the model; the server bounds the line (assistant/local_gate.py).
        self.local_gate = LocalGate()
        self._draft_checks: dict[str, DraftCheck] = {}

    # -- parts, loaded lazily ----------------------------------------------------------------

    @property
    def model_path(self) -> Path:
        if self._model_given and self._model is not None:
            return Path(self._model.path)
        return current_model(self.settings).require()

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
                    max_file_bytes=self.settings.max_file_bytes,
                    batch_chunks=self.settings.index_batch_chunks,
                )
            return self._index

    @property
    def model(self) -> LocalModel:
        with self._load_lock:
            if self._model is None:
                self._model = LocalModel(
                    self.model_path,
                    n_ctx=self.settings.n_ctx,
                    n_threads=self.settings.n_threads,
                    seed=self.settings.seed,
                )
            return self._model

    @property
    def sampler(self) -> ParallelSampler:
        """A second llama.cpp context on the loaded model for votes (its own KV cache only)."""
        model = self.model
        with self._load_lock:
            if self._sampler is None:
                samples = max(self.settings.vote_max_samples, self.settings.vote_min_samples)
                # Room for the prompt once and every sample's full answer.
                self._sampler = ParallelSampler(model, max_sequences=samples,
                                                n_ctx=self.settings.n_ctx + (samples - 1) * self.settings.max_tokens)
            return self._sampler

    @property
    def tuner(self) -> QuestionTuner:
        model = self.model
        with self._load_lock:
            if self._tuner is None:
                self._tuner = QuestionTuner(self.model_path, model.info.architecture, self.settings.cache_dir,
                                            lora_spec(self.settings), threads=self.settings.n_threads)
            return self._tuner

    @property
    def records(self) -> AnswerStore:
        with self._load_lock:
            if self._records is None:
                self._records = AnswerStore(self.settings.database_path)
            return self._records

    def models(self) -> list[dict]:
        """The local models skiff can install, which are installed and which answers."""
        return catalog(self.settings)

    def switch_model(self, name_or_path: str) -> Path:
        """Answer with another local model from now on (as `skiff model use`); it loads on first use.
        Not while an answer is being written: the caller waits for it."""
        if self.settings.model_path:
            raise ModelInstallError(f"the model_path setting ({self.settings.model_path}) chooses the model; "
                                    "remove it to switch with `skiff model use`")
        path = use_model(self.settings, name_or_path).require()
        with self._load_lock:
            for part in (self._sampler, self._model):
                if part is not None:
                    part.close()
            self._model = self._sampler = self._tuner = None
            self._model_given = False
        return path

    def close(self) -> None:
        for part in (self._index, self._sampler, self._model, self._records):
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
        with self._index_lock:  # a watcher and an explicit index never write at once
            try:
                return self.notes.index(targets, progress=progress, cancel=cancel)
            except Exception as error:
                full = disk_full(error, self.settings.index_dir)
                if full is None:
                    raise
                # The manifest marks a batch pending before its chunks change, so what the failed
                # write touched is redone from scratch by the next run.
                raise DiskFullError(f"{full}. Files indexed so far are kept and "
                                    "nothing was half-written: free some space and run `skiff index` again, "
                                    "it carries on.") from error

    def index_size(self) -> tuple[int, int]:
        """(files, chunks) in the index; (0, 0) before anything was indexed. Opens the index, which
        checks it: a damaged one is set aside and said now, not at the first question."""
        if not self.settings.index_dir.exists():
            return (0, 0)
        self.notes.open()
        return self.notes.totals()

    def watch_notes(self, stop: threading.Event, on_reindexed: Callable[[IndexSummary], None] | None = None,
                    debounce_ms: int = 800) -> None:
        """Re-index the folders indexed before whenever files under them change, until `stop` is
        set. Blocks: run it in a thread. Each batch of changes runs the ordinary incremental index
        (unchanged files are skipped by size and mtime), so deletions and renames are handled too."""
        from watchfiles import watch

        roots = [root for root in self.notes.roots() if Path(root).is_dir()]
        if not roots:
            return
        for _changes in watch(*roots, stop_event=stop, debounce=debounce_ms, raise_interrupt=False):
            summary = self.index(roots)
            if on_reindexed is not None:
                on_reindexed(summary)

    # -- answering -----------------------------------------------------------------------------

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        """The note chunks SIFT selects for `question` (see consult_notes)."""
        return list(self.consult_notes(question, k=k).hits)

    def retrieval_config(self, k: int | None = None) -> RetrievalConfig:
        s = self.settings
        return RetrievalConfig(k=s.top_k if k is None else k, dense=s.sift_candidates, lexical=s.lexical_candidates,
                               pool=s.sift_candidates, selection=s.selection, sift_lambda=s.sift_lambda)

    def consult_notes(self, question: str, k: int | None = None, use_notes: bool = True) -> QuestionWithNotes:
        """Embed the question, gather candidates by vector and by BM25, fuse them, choose k
        (assistant/retrieval.py). The variance the chosen chunks leave, σ², is the router's coverage
        signal."""
        embedding = self.embedder.encode_query(question)
        if not use_notes:
            return QuestionWithNotes(question, embedding, [], None)
        found = retrieve(self.notes, question, embedding, self.retrieval_config(k))
        if not found.candidates:
            return QuestionWithNotes(question, embedding, [], 1.0)
        return QuestionWithNotes(question, embedding, found.selected, found.coverage, found.candidates)

    def decide(self, question: str, use_notes: bool = True) -> Decision:
        """Where `question` would go and why, without answering it (nothing is recorded)."""
        consulted = self.consult_notes(question.strip(), use_notes=use_notes)
        with self._router_lock:
            self._prepare_router()
            return self.policy.decide(consulted)

    def ask(
        self,
        question: str,
        history: Sequence[dict] = (),
        use_notes: bool = True,
        route: Route | None = None,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        on_progress: TuningProgress | None = None,
        on_set_aside: Callable[[str], None] | None = None,
        overrides: dict | None = None,
    ) -> Answer:
        """Answer `question` where the router decides, or on `route` when the person says so.
        `overrides`: settings for this answer only (a server client's temperature or max_tokens).
        `on_progress(stage, done, total)` reports local+ work: "load" (the training copy), "step"
        (LoRA optimizer steps), "sample" (tokens of a vote's samples). `on_set_aside(reason)` is
        told when the text streamed so far is set aside for a stronger answer (an unsure draft
        escalating to the cloud); the answer's `draft` keeps it."""
        started = time.perf_counter()
        question, consulted, decision, timings = self._consult_and_decide(question, use_notes, started)
        if route is not None and route != decision.route:
            decision = decision.overridden_to(route)
        answer = self._answer(consulted, decision, history, on_token, cancel, started, timings, on_progress,
                              on_set_aside, asked_for=route is not None, overrides=overrides)
        if route is not None and answer.answered_by in ("local", "cloud") and answer.text:
            # Asked again on the other model: the two answers form a pair the router learns from.
            counterpart = self.records.unpaired_counterpart(question, answer.answered_by, answer.id, PAIR_WINDOW_S)
            if counterpart is not None:
                self.records.pair(counterpart, answer.id)
                answer.pair_id = counterpart
        return answer

    def compare(
        self,
        question: str,
        history: Sequence[dict] = (),
        use_notes: bool = True,
        on_token: Callable[[Route, str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[Answer, Answer]:
        """Both models answer (local first, then cloud); judging both teaches the router the gap
        on this question exactly (router/feedback.py)."""
        started = time.perf_counter()
        question, consulted, decision, timings = self._consult_and_decide(question, use_notes, started)
        answers = []
        for side in ("local", "cloud"):
            forced = decision if decision.route == side else decision.overridden_to(side)
            emit = (lambda piece, side=side: on_token(side, piece)) if on_token is not None else None
            answers.append(self._answer(consulted, forced, history, emit, cancel, time.perf_counter(), timings,
                                        asked_for=True))
            if cancel is not None and cancel.is_set():
                break
        local, cloud = answers[0], answers[-1]
        if len(answers) == 2 and cloud.answered_by == "cloud" and cloud.text:
            self.records.pair(local.id, cloud.id)
            local.pair_id = cloud.pair_id = local.id
        return local, cloud

    def _consult_and_decide(self, question: str, use_notes: bool, started: float):
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        consulted = self.consult_notes(question, use_notes=use_notes)
        retrieved_at = time.perf_counter()
        with self._router_lock:
            self._prepare_router()
            decision = self.policy.decide(consulted)
        timings = {
            "retrieve_s": round(retrieved_at - started, 4),
            "decide_s": round(time.perf_counter() - retrieved_at, 4),
        }
        return question, consulted, decision, timings

    def _answer(self, consulted: QuestionWithNotes, decision: Decision, history: Sequence[dict],
                on_token: Callable[[str], None] | None, cancel: threading.Event | None, started: float,
                timings: dict, on_progress: TuningProgress | None = None,
                on_set_aside: Callable[[str], None] | None = None, asked_for: bool = False,
                overrides: dict | None = None) -> Answer:
        """Run the route's chain of attempts (assistant/attempts.py) and record what it came to.
        `asked_for`: the person chose the route (a local answer asked for stays local). An answer
        the local model was too busy to take (LocalBusy) leaves no record: it was never given."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        attempts, notices = chain_for(decision.route, cloud_unreachable(settings),
                                      decision.overridden or asked_for, self, settings, self.open_cloud_client)
        answer_id = new_answer_id()
        self.records.start(answer_id, consulted.text, decision, attempts[0].answered_by, attempts[0].model)
        turn = Turn(consulted, decision, history, on_token, cancel, on_progress,
                    lambda sent: self.records.set_sent(answer_id, sent), on_set_aside)
        try:
            attempted = run_attempts(attempts, turn, notices)
        except LocalBusy:
            self.records.discard(answer_id)
            raise
        except BaseException:
            self._record(answer_id, consulted.text, decision, started, timings,
                         Attempted(Generated(), attempts[0].answered_by, attempts[0].model, notices))
            raise
        if turn.queue_wait_s:
            timings = {**timings, "queue_wait_s": round(turn.queue_wait_s, 4)}
        return self._record(answer_id, consulted.text, decision, started, timings, attempted)

    def _record(self, answer_id: str, question: str, decision: Decision, started: float, timings: dict,
                attempted: Attempted) -> Answer:
        done, answered_by = attempted.generated, attempted.answered_by
        timings = {
            **timings,
            "first_token_s": round(done.first_piece_at - started, 4) if done.first_piece_at is not None else None,
            "total_s": round(time.perf_counter() - started, 4),
            "decode_tokens_per_s": round(done.decode_tokens_per_s, 2) if done.decode_tokens_per_s else None,
        }
        tokens = {"prompt": done.prompt_tokens, "completion": done.completion_tokens}
        if done.tokens_estimated:
            tokens["estimated"] = True
        sources = Source.numbered(done.notes)
        notices = list(attempted.notices)
        if (unknown := unknown_citations_notice(done.text, len(sources))) is not None:
            notices.append(unknown)
        cost = done.cost_usd if answered_by == "cloud" else None
        checked = attempted.draft_check
        draft = None if checked is None else DraftRecord(checked.as_dict(), checked.features, self.model_name,
                                                         attempted.draft)
        self.records.finish(answer_id, done.text, [s.as_dict() for s in sources], timings, tokens, done.stop_reason,
                            answered_by, attempted.model, cost, attempted.allocation, attempted.abstention, draft)
        return Answer(answer_id, question, done.text, decision, sources, timings, tokens, done.stop_reason,
                      attempted.model, notices, answered_by, cost, done.local_offered,
                      allocation=attempted.allocation, abstention=attempted.abstention,
                      draft_check=None if draft is None else draft.check, draft=attempted.draft)

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def prepare_local(self) -> list[str]:
        """Before a local answer: the personal adapter goes under the model while it matches."""
        return self._use_personal_adapter()

    # -- cloud and records -------------------------------------------------------------------

    def cloud_check(self) -> dict:
        """Reachability of the configured endpoint (never contacted in offline mode)."""
        why_not = why_no_cloud(self.settings)
        if why_not is not None:
            return {"ok": False, "base_url": self.settings.cloud_base_url, "message": why_not.split(";")[0]}
        with self.open_cloud_client(self.settings) as client:
            return client.check().as_dict()

    def answer_record(self, answer_id: str | None = None) -> dict | None:
        """A recorded answer with what was sent to the cloud for it, if anything."""
        answer_id = answer_id or self.records.latest_answer_id()
        return self.records.get(answer_id) if answer_id else None

    def source_lines(self, source: dict) -> list[str]:
        """The cited note's lines, numbered as the source's line_start and line_end count them."""
        return source_lines(Path(source["path"]), source.get("page"), self.settings.max_file_bytes)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict:
        """Where things live, the model, the index, the personal adapter, the cloud (assistant/status_report.py)."""
        return describe(self)
