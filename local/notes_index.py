"""The notes index: chromadb (vectors + text, see chroma_store.py) plus a SQLite manifest (what
was indexed, from which bytes). Incremental by content hash, crash-safe per file (see
manifest.py), never aborted by one bad file."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from skiff.local.chunking import SECTION_SEPARATOR, Chunk, chunk_document, chunk_header
from skiff.local.embedder import Embedder
from skiff.local.files import Found, Skipped, printable_path, walk_notes
from skiff.local.lexical import LexicalHit, LexicalRow, TermStats
from skiff.local.manifest import FileRecord, Manifest
from skiff.local.readers import UnreadableDocument, clean_text, read_document
from skiff.local.chroma_store import ChromaStore, Hit, StoredChunk
from skiff.local.recovery import Recovery, report

@dataclass
class IndexSummary:
    files_seen: int = 0
    indexed: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    chunks_total: int = 0
    files_total: int = 0
    seconds: float = 0.0
    cancelled: bool = False

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class IndexProgress:
    """Posted after every file: enough for a progress bar."""

    files_done: int
    files_total: int
    chunks_added: int
    current: str


@dataclass
class _Parsed:
    path: str
    root: str
    sha256: str
    size: int
    mtime_ns: int
    kind: str
    chunks: list[Chunk]
    title: str
    metadata: dict
    # False for a file chromadb cannot hold chunks of (never seen, or seen and skipped), so its
    # write needs no delete first: on a fresh index the deletes were ~3% of the run.
    may_have_chunks: bool


def _may_have_chunks(record: FileRecord | None) -> bool:
    return record is not None and (record.chunks > 0 or record.state == "pending")


def _distinct(chunks: list[Chunk], vectors: np.ndarray) -> tuple[list[Chunk], np.ndarray]:
    """The chunks (and their vectors) but those whose vector repeats an earlier one's. Why: hundreds
    of identical vectors (a pasted base64 blob, a decompression bomb's repeated text) break
    chromadb's HNSW graph: every search then returned them and missed the notes that answer it."""
    seen: set[bytes] = set()
    keep = []
    for position, vector in enumerate(np.round(np.asarray(vectors, dtype=np.float32), 3) + 0.0):  # -0.0 is 0.0
        key = vector.tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(position)
    if len(keep) == len(chunks):
        return chunks, vectors
    return [chunks[i] for i in keep], np.asarray(vectors)[keep]


def _chunk_id(path: str, number: int) -> str:
    return f"{hashlib.sha1(path.encode('utf-8', 'surrogatepass')).hexdigest()[:20]}:{number}"


class NotesIndex:
    def __init__(self, index_dir: Path, embedder: Embedder, chunk_tokens: int = 128,
                 max_file_bytes: int = 20 * 1024 * 1024, batch_chunks: int = 256) -> None:
        self.index_dir = Path(index_dir)
        self.embedder = embedder
        self.chunk_tokens = chunk_tokens
        self.max_file_bytes = max_file_bytes
        self.batch_chunks = batch_chunks
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.index_dir / "manifest.sqlite3")
        self.store = ChromaStore(self.index_dir / "chroma", embedder, self._chroma_set_aside, self._check_complete)
        if self.manifest.recovery is not None:
            # Without the manifest chromadb's chunks cannot be matched to files: both are rebuilt.
            damaged = self.manifest.recovery
            self._announce(damaged.reason, damaged.backups + self.store.set_aside())

    # -- chromadb ------------------------------------------------------------------------------

    @property
    def collection(self):
        """chromadb's collection, opened (and so checked) on first use."""
        return self.store.collection

    def open(self) -> None:
        """Open the index now, which checks it: damage is set aside and said at once."""
        self.store.collection  # noqa: B018 - opening is the point

    def _chroma_set_aside(self, reason: str, backups: tuple[Path, ...]) -> None:
        self.manifest.mark_all_pending()
        self._announce(reason, backups)

    def _check_complete(self) -> None:
        """A healthy index holds at least the chunks its manifest lists as done (a crash can leave
        extra ones of files marked pending, never fewer). Fewer means chromadb lost data: every
        file is redone by the next run."""
        listed, held = self.manifest.done_chunks(), self.store.count()
        if held < listed:
            self.manifest.mark_all_pending()
            self._announce(f"it holds {held} of the {listed} chunks its manifest lists", ())
        elif self.manifest.lexical_count() < listed:
            # An index written before the lexical side existed: its rows are rebuilt from the
            # chunks chromadb holds, once, without embedding anything again.
            self.manifest.refill_lexical(
                LexicalRow(chunk_id, meta.get("path", ""),
                           _lexical_text(str(meta.get("title", "")), str(meta.get("section", "")), text))
                for chunk_id, text, meta in self.store.rows())

    def _announce(self, reason: str, backups: tuple[Path, ...]) -> None:
        roots = self.manifest.roots()
        where = f" from {', '.join(roots)}" if roots else ""
        report(Recovery("notes index", reason, backups,
                        f"`skiff index` rebuilds it{where}; until then answers use what is left of it. "
                        "Your notes were not touched."))

    def close(self) -> None:
        self.manifest.close()

    # -- status --------------------------------------------------------------------------------

    def totals(self) -> tuple[int, int]:
        """(files, chunks) currently indexed."""
        return self.manifest.totals()

    def roots(self) -> list[str]:
        return self.manifest.roots()

    def indexed_files(self) -> list[FileRecord]:
        """The files whose chunks are in the index, by path."""
        return sorted((r for r in self.manifest.records().values() if r.state == "done" and r.chunks > 0),
                      key=lambda record: record.path)

    def fingerprint(self) -> str:
        return self.manifest.fingerprint()

    def chunk_texts(self) -> Iterator[StoredChunk]:
        """Every indexed chunk, in a stable order (see ChromaStore.chunks)."""
        return self.store.chunks()

    # -- indexing ------------------------------------------------------------------------------

    def index(
        self,
        paths: Iterable[str | os.PathLike],
        progress: Callable[[IndexProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> IndexSummary:
        started = time.perf_counter()
        summary = IndexSummary()
        roots = [os.path.abspath(os.path.expanduser(str(p))) for p in paths]
        found: list[Found] = []
        for root in roots:
            for item in walk_notes(root):
                if isinstance(item, Skipped):
                    summary.skipped.append({"path": item.path, "reason": item.reason})
                else:
                    found.append(item)
        # A root whose name is not UTF-8 was skipped by the walk (with the reason); the manifest
        # cannot store its name either.
        existing_roots = [r for r in roots if os.path.lexists(r) and r == printable_path(r)]
        self.manifest.add_roots(existing_roots)
        known = self.manifest.records()
        summary.files_seen = len(found) + sum(
            1 for s in summary.skipped if s["reason"] != "no such file or folder"
        )

        batch: list[_Parsed] = []
        batch_chunks = 0
        skipped_with_old_chunks: list[FileRecord] = []
        seen: set[str] = set()
        # Encoding runs in its own thread (onnxruntime releases the GIL) while this thread reads,
        # parses and chunks the next batch and writes the previous one to chromadb: at most one
        # batch encoding and one waiting, so memory stays bounded.
        encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skiff-embed")
        in_flight: tuple[list[_Parsed], Future] | None = None

        def hand_over(parsed: list[_Parsed]) -> None:
            nonlocal in_flight
            future = encoder.submit(self.embedder.encode, [c.embed_text for p in parsed for c in p.chunks])
            if in_flight is not None:
                self._write_batch(in_flight[0], in_flight[1].result(), summary)
            in_flight = (parsed, future)

        try:
            for number, item in enumerate(found, start=1):
                if cancel is not None and cancel.is_set():
                    summary.cancelled = True
                    break
                seen.add(item.path)
                previous = known.get(item.path)
                outcome = self._examine(item, previous, summary)
                if isinstance(outcome, _Parsed):
                    batch.append(outcome)
                    batch_chunks += len(outcome.chunks)
                    if batch_chunks >= self.batch_chunks:
                        hand_over(batch)
                        batch, batch_chunks = [], 0
                elif isinstance(outcome, FileRecord):
                    if _may_have_chunks(previous):
                        skipped_with_old_chunks.append(outcome)
                    else:
                        self.manifest.commit([outcome])
                if progress is not None:
                    progress(IndexProgress(number, len(found), summary.chunks_added, item.path))
            if batch:
                hand_over(batch)
            if in_flight is not None:
                self._write_batch(in_flight[0], in_flight[1].result(), summary)
                in_flight = None
        finally:
            encoder.shutdown(wait=True, cancel_futures=True)
        if skipped_with_old_chunks:
            self._replace_chunks([(r.path, r.root) for r in skipped_with_old_chunks],
                                 [r.path for r in skipped_with_old_chunks], [], [], [], [])
            self.manifest.commit(skipped_with_old_chunks)

        if not summary.cancelled:
            # Anything indexed under a walked root that the walk no longer yields is gone: deleted,
            # renamed, hidden, or now a broken link. Roots that vanished entirely (an unmounted
            # drive) are left alone rather than emptied.
            gone = [r for path, r in known.items() if path not in seen and self._under(path, existing_roots)]
            if gone:
                self._replace_chunks([(r.path, r.root) for r in gone],
                                     [r.path for r in gone if _may_have_chunks(r)], [], [], [], [])
                self.manifest.forget(r.path for r in gone)
                summary.removed = sum(1 for r in gone if r.state != "skipped")
        summary.files_total, summary.chunks_total = self.manifest.totals()
        summary.seconds = time.perf_counter() - started
        return summary

    @staticmethod
    def _under(path: str, roots: Iterable[str]) -> bool:
        return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)

    def _examine(self, item: Found, previous: FileRecord | None, summary: IndexSummary):
        """Decide one file: unchanged (None), skipped (a FileRecord to commit) or parsed."""
        path = item.path

        def skip(reason: str, size=None, mtime_ns=None, sha256=None) -> FileRecord:
            summary.skipped.append({"path": path, "reason": reason})
            return FileRecord(path, item.root, "skipped", sha256, size, mtime_ns, 0, None, reason)

        try:
            info = os.stat(path)
        except OSError as error:
            return skip(f"cannot stat ({error.strerror or error})")
        if not stat.S_ISREG(info.st_mode):
            return skip("not a regular file")
        if previous is not None and previous.state in ("done", "skipped") and (
            previous.size == info.st_size and previous.mtime_ns == info.st_mtime_ns
        ):
            if previous.state == "done":
                summary.unchanged += 1
            else:
                summary.skipped.append({"path": path, "reason": previous.reason or "skipped"})
            return None
        if info.st_size > self.max_file_bytes:
            return skip(
                f"too large ({info.st_size / 1048576:.1f} MB > {self.max_file_bytes / 1048576:.1f} MB limit)",
                info.st_size, info.st_mtime_ns,
            )
        try:
            with open(path, "rb") as handle:
                data = handle.read(self.max_file_bytes + 1)
        except OSError as error:
            return skip(f"unreadable ({error.strerror or error})", info.st_size, info.st_mtime_ns)
        if len(data) > self.max_file_bytes:
            return skip("too large (grew while reading)", info.st_size, info.st_mtime_ns)
        sha256 = hashlib.sha256(data).hexdigest()
        if previous is not None and previous.state == "done" and previous.sha256 == sha256:
            self.manifest.touch(path, info.st_mtime_ns)
            summary.unchanged += 1
            return None
        if not data.strip():
            return skip("empty file", info.st_size, info.st_mtime_ns, sha256)
        try:
            document = read_document(Path(path), data)
        except UnreadableDocument as error:
            return skip(str(error), info.st_size, info.st_mtime_ns, sha256)
        except RecursionError:
            return skip("too deeply nested to parse", info.st_size, info.st_mtime_ns, sha256)
        except Exception as error:  # noqa: BLE001 - a reader's bug must cost its file, not the whole run
            # The readers raise only UnreadableDocument by contract (fuzzed and property-tested),
            # yet one escape (pypdf's OverflowError) aborted every file's indexing before this.
            return skip(f"could not be read ({type(error).__name__}: {error})"[:300], info.st_size,
                        info.st_mtime_ns, sha256)
        for warning in document.warnings:
            summary.warnings.append({"path": path, "warning": warning})
        # A file name may hold newlines, tabs or escape sequences; the title is shown and embedded.
        title = document.title or clean_text(Path(path).stem)
        try:
            chunks = chunk_document(document, title, self.embedder, self.chunk_tokens)
        except Exception as error:  # noqa: BLE001 - the same contract as the readers' above
            # A note's front matter `title: true` reached the chunker as a bool and aborted a
            # 62,780-file run at file 23,802 (bench/index_scale.py) before the reader was fixed.
            return skip(f"could not be split into chunks ({type(error).__name__}: {error})"[:300], info.st_size,
                        info.st_mtime_ns, sha256)
        if not chunks:
            # The reader's warning is the why (a PDF bomb's limit, a scanned PDF): shown with the skip.
            why = f": {document.warnings[-1]}" if document.warnings else ""
            return skip(f"no text to index{why}"[:300], info.st_size, info.st_mtime_ns, sha256)
        # A chunk repeated word for word under the same heading is embedded once (see _distinct).
        texts: set[str] = set()
        distinct = [c for c in chunks if not (c.embed_text in texts or texts.add(c.embed_text))]
        if len(distinct) < len(chunks):
            summary.warnings.append({"path": path, "warning": f"{len(chunks) - len(distinct)} repeated "
                                     "chunk(s) left out (the same text under the same heading)"})
            chunks = distinct
        return _Parsed(path, item.root, sha256, info.st_size, info.st_mtime_ns, document.kind,
                       chunks, title, document.metadata, _may_have_chunks(previous))

    def _write_batch(self, batch: list[_Parsed], vectors: np.ndarray, summary: IndexSummary) -> None:
        ids: list[str] = []
        documents: list[str] = []
        metadatas: list[dict] = []
        lexical_rows: list[LexicalRow] = []
        kept_vectors: list[np.ndarray] = []
        position = 0
        for parsed in batch:
            count = len(parsed.chunks)
            parsed.chunks, file_vectors = _distinct(parsed.chunks, vectors[position : position + count])
            position += count
            if len(parsed.chunks) < count:
                summary.warnings.append({"path": parsed.path, "warning": (
                    f"{count - len(parsed.chunks)} chunk(s) left out: they embed the same as another chunk of "
                    "the file (long runs the embedder reads as one unknown word)")})
            kept_vectors.append(file_vectors)
            for number, chunk in enumerate(parsed.chunks):
                ids.append(_chunk_id(parsed.path, number))
                documents.append(chunk.text)
                metadatas.append(self._chunk_metadata(parsed, chunk))
                lexical_rows.append(LexicalRow(ids[-1], parsed.path, chunk.embed_text))
        vectors = np.concatenate(kept_vectors) if kept_vectors else vectors[:0]
        self._replace_chunks([(p.path, p.root) for p in batch], [p.path for p in batch if p.may_have_chunks],
                             ids, vectors, documents, metadatas)
        self.manifest.commit(
            [FileRecord(p.path, p.root, "done", p.sha256, p.size, p.mtime_ns, len(p.chunks), p.kind, None)
             for p in batch],
            lexical_rows,
        )
        summary.indexed += len(batch)
        summary.chunks_added += len(ids)

    @staticmethod
    def _chunk_metadata(parsed: _Parsed, chunk: Chunk) -> dict:
        meta = {
            "path": parsed.path,
            "root": parsed.root,
            "title": parsed.title,
            "section": SECTION_SEPARATOR.join(chunk.section),
            "line_start": chunk.line_start,
            "line_end": chunk.line_end,
            "kind": parsed.kind,
            "private": bool(parsed.metadata.get("private", False)),
        }
        if chunk.page is not None:
            meta["page"] = chunk.page
        if parsed.metadata.get("tags"):
            meta["tags"] = str(parsed.metadata["tags"])
        return meta

    def _replace_chunks(self, files, stale_paths, ids, vectors, documents, metadatas) -> None:
        """Crash-safe replacement of every chunk of `files` (see the manifest protocol);
        `stale_paths` are those of them that may still have chunks from before."""
        self.manifest.mark_pending(files)
        self.store.replace(stale_paths, ids, vectors, documents, metadatas)

    # -- retrieval -----------------------------------------------------------------------------

    def search(self, query_vector: np.ndarray, k: int, with_embeddings: bool = False) -> list[Hit]:
        """The k chunks nearest the query vector (cosine)."""
        return self.store.search(query_vector, k, with_embeddings)

    def lexical_search(self, question: str, k: int) -> list[LexicalHit]:
        """The k chunks BM25 ranks highest for the question's words (lexical.py)."""
        self.open()  # an index from before the lexical side is filled in on first open
        return self.manifest.lexical_search(question, k)

    def term_stats(self, question: str, chunk_ids: list[str]) -> tuple[int, list[TermStats]]:
        """How rare each of the question's words is in the notes, and whether these chunks hold it."""
        self.open()
        return self.manifest.term_stats(question, chunk_ids)

    def fetch(self, chunk_ids: list[str], query_vector: np.ndarray | None = None,
              with_embeddings: bool = False) -> list[Hit]:
        """These chunks as hits (those still indexed, in the order asked), their distance to
        `query_vector` computed here."""
        return self.store.fetch(chunk_ids, query_vector, with_embeddings)


def _lexical_text(title: str, section: str, text: str) -> str:
    header = chunk_header(title, tuple(section.split(SECTION_SEPARATOR)) if section else ())
    return f"{header}\n\n{text}" if header else text
