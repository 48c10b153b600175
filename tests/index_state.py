"""The whole state of a notes index (every chunk's text, metadata and vector, the manifest and the
lexical rows), read
the way a fresh skiff process reads it, for comparing an index with a clean run's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_STATE_SCRIPT = """
import hashlib, json, sys
from pathlib import Path
import numpy as np
from skiff.local.embedder import Embedder
from skiff.local.notes_index import NotesIndex

index = NotesIndex(Path(sys.argv[1]) / "data" / "index", Embedder(Path(sys.argv[2])))
got = index.collection.get(include=["documents", "metadatas", "embeddings"])
chunks = {
    i: [d, json.dumps(m, sort_keys=True), hashlib.sha1(np.round(np.asarray(v), 5).tobytes()).hexdigest()]
    for i, d, m, v in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])
}
manifest = {p: [r.state, r.sha256, r.chunks] for p, r in index.manifest.records().items()}
# The lexical side (FTS5, in the manifest's database): every row, and what a search reads back.
lexical = {chunk_id: [path, text] for chunk_id, path, text in index.manifest.db.execute(
    "SELECT c.chunk_id, c.path, l.text FROM lexical_chunks c JOIN lexical l ON l.rowid = c.rowid")}
orphans = index.manifest.db.execute(
    "SELECT COUNT(*) FROM lexical WHERE rowid NOT IN (SELECT rowid FROM lexical_chunks)").fetchone()[0]
print(json.dumps({"chunks": chunks, "manifest": manifest, "lexical": lexical, "lexical_orphans": orphans}))
"""


def index_state(home: Path, cache: Path) -> dict:
    """Read an index the way a fresh skiff process would (chromadb caches clients per process)."""
    result = subprocess.run([sys.executable, "-c", _STATE_SCRIPT, str(home), str(cache)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
