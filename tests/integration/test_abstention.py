""""My notes don't say": the support signals, the model's own check on the real engine, and the
answer pipeline's behaviour on both sides of the threshold (real llama.cpp, chromadb, embedder)."""

from __future__ import annotations

import math

import numpy as np

from skiff.local.lexical import TermStats
from skiff.local.notes_index import Hit
from skiff.assistant.abstention import Support, idf, measure_support, model_says_yes, probability_unsupported


def hit(chunk_id: str, distance: float) -> Hit:
    return Hit(chunk_id, "text", f"/notes/{chunk_id}.md", chunk_id, "", 1, 2, None, False, distance)


class ScriptedTerms:
    """A stand-in for the index's term statistics: which words exist, and in which chunks."""

    def __init__(self, total: int, documents: dict[str, int], in_chunks: dict[str, set[str]]) -> None:
        self.total, self.documents, self.in_chunks = total, documents, in_chunks

    def term_stats(self, question, chunk_ids):
        words = question.lower().rstrip("?").split()
        return self.total, [TermStats(w, self.documents.get(w, 0), bool(self.in_chunks.get(w, set()) & set(chunk_ids)))
                            for w in words]


def test_support_weighs_words_by_rarity_and_notices_the_missing_rare_one():
    terms = ScriptedTerms(1000, {"sync": 50, "docker": 0, "vault": 400}, {"sync": {"a"}, "vault": {"a"}})
    support = measure_support(terms, "sync vault docker", [hit("a", 0.3)], [hit("a", 0.3), hit("b", 0.5)], 0.4)
    weights = {w: idf(d, 1000) for w, d in (("sync", 50), ("vault", 400), ("docker", 0))}
    assert math.isclose(support.covered, (weights["sync"] + weights["vault"]) / sum(weights.values()))
    assert math.isclose(support.rarest_missing, weights["docker"])  # absent from every note: the rarest
    assert math.isclose(support.best_similarity, 0.7) and support.coverage == 0.4
    covered = measure_support(terms, "sync vault", [hit("a", 0.3)], [hit("a", 0.3)], 0.4)
    assert covered.covered == 1.0 and covered.rarest_missing == 0.0


def test_less_support_means_a_higher_probability_the_notes_do_not_say():
    strong = Support(best_similarity=0.8, covered=0.9, rarest_missing=0.0, coverage=0.3, model_says_yes=4.0)
    weak = Support(best_similarity=0.4, covered=0.2, rarest_missing=9.0, coverage=0.8, model_says_yes=-4.0)
    assert probability_unsupported(weak) > probability_unsupported(strong)


def test_the_model_check_reads_yes_and_no_from_the_real_engine(skiff_home):
    from skiff.local.llm import LocalModel

    from conftest import fast_model_path

    model = LocalModel(fast_model_path(), n_ctx=1024, n_threads=2)
    try:
        messages = [{"role": "system", "content": "Answer yes or no."},
                    {"role": "user", "content": "Notes:\n\n[1] Search\nOpen search with Ctrl+Shift+F.\n\n"
                                                "Question: Which keys open search?"}]
        first = model_says_yes(model, messages)
        again = model_says_yes(model, messages)  # the evaluated prompt is reused: the same answer
        assert np.isfinite(first) and math.isclose(first, again, abs_tol=1e-3)
        assert model.token_ids(["Yes", "Yes"]) == model.token_ids(["Yes"])
    finally:
        model.close()


def ask_json(env_updates: dict, question: str, notes) -> dict:
    import json
    import os

    from conftest import run_skiff

    env = {**os.environ, "SKIFF_OFFLINE": "true", "SKIFF_MAX_TOKENS": "24", **env_updates}
    run_skiff("index", str(notes), env=env)
    return json.loads(run_skiff("ask", "--json", question, env=env).stdout)


def test_past_the_threshold_the_answer_says_so_first_and_uses_no_notes(skiff_home, vault):
    answer = ask_json({"SKIFF_ABSTAIN": "true", "SKIFF_ABSTAIN_THRESHOLD": "0"}, "Which keys open search?", vault)
    assert answer["abstained"] and answer["abstention"]["probability"] > 0
    assert answer["answer"].splitlines()[0] == "My notes don't say."
    assert answer["sources"] == []


def test_under_the_threshold_the_notes_answer_and_the_check_is_recorded(skiff_home, vault):
    answer = ask_json({"SKIFF_ABSTAIN": "true", "SKIFF_ABSTAIN_THRESHOLD": "1"}, "Which keys open search?", vault)
    assert not answer["abstained"] and answer["sources"]
    assert set(answer["abstention"]) >= {"probability", "threshold", "covered", "model_says_yes"}
    assert not answer["answer"].startswith("My notes don't say.")


def test_the_shipped_threshold_is_the_fitted_one():
    from skiff.assistant.abstention import DEFAULT_THRESHOLD
    from skiff.config.settings import Settings

    assert Settings.model_fields["abstain_threshold"].default == DEFAULT_THRESHOLD


def test_by_default_the_check_runs_with_the_model_it_was_fitted_for_only():
    from skiff.local.models import CATALOG
    from skiff.assistant.abstention import FITTED_FOR, check_applies
    from skiff.assistant.model_choice import DEFAULT_MODEL

    assert CATALOG[DEFAULT_MODEL].file_name == FITTED_FOR
    assert check_applies(None, FITTED_FOR) and not check_applies(None, "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert check_applies(True, "other.gguf") and not check_applies(False, FITTED_FOR)
