from pathlib import Path

import pytest

from skiff.local.chunking import SPECIAL_TOKENS, chunk_document
from skiff.local.embedder import Embedder
from skiff.local.readers import read_document

from conftest import VAULT


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    # Token counting needs only the embedder's tokenizer, not the network weights.
    return Embedder(tmp_path_factory.mktemp("cache"))


def chunks_of(name: str, text: str, counter, max_tokens=64):
    doc = read_document(Path(name), text.encode())
    return chunk_document(doc, Path(name).stem, counter, max_tokens)


def test_chunks_never_cross_headings(counter):
    chunks = chunks_of("a.md", "# A\n\nalpha one.\n\nalpha two.\n\n# B\n\nbeta.\n", counter)
    assert [(c.section, c.text) for c in chunks] == [(("A",), "alpha one.\n\nalpha two."), (("B",), "beta.")]
    assert chunks[0].embed_text.startswith("a > A\n\n")
    assert (chunks[0].line_start, chunks[0].line_end) == (3, 5)


@pytest.mark.parametrize("max_tokens", [32, 64, 128])
def test_every_chunk_fits_the_token_bound_on_real_notes(counter, max_tokens):
    files = sorted(VAULT.rglob("*.md"))[:40] if VAULT.is_dir() else []
    if not files:
        pytest.skip("vault not available")
    total = 0
    for path in files:
        doc = read_document(path, path.read_bytes())
        for chunk in chunk_document(doc, path.stem, counter, max_tokens):
            assert counter.count_tokens(chunk.embed_text) + SPECIAL_TOKENS <= max_tokens, (path, chunk)
            total += 1
    assert total > 40


def test_one_huge_line_is_split_within_the_bound_with_line_numbers(counter):
    words = " ".join(f"word{i}" for i in range(20000))
    text = f"# Big\n\n{words}\nsecond line after\n"
    chunks = chunks_of("big.md", text, counter, max_tokens=128)
    assert len(chunks) > 20
    assert all(counter.count_tokens(c.embed_text) + SPECIAL_TOKENS <= 128 for c in chunks)
    joined = " ".join(c.text for c in chunks)
    assert "word0 " in joined and "word19999" in joined and "second line after" in joined
    assert chunks[0].line_start == 3 and chunks[-1].line_end == 4


def test_text_without_spaces_is_cut_on_token_boundaries(counter):
    blob = "x" * 50000
    chunks = chunks_of("blob.txt", blob, counter, max_tokens=64)
    assert sum(len(c.text) for c in chunks) == 50000
    assert all(counter.count_tokens(c.embed_text) + SPECIAL_TOKENS <= 64 for c in chunks)
