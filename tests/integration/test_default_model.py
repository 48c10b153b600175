"""End to end on the default model (the one README command 1 installs), not the fast test model:
the README's own demo question over examples/notes is answered right, with its source; a
question the notes do not answer is said to be so."""

from __future__ import annotations

import json
import os

import pytest

from conftest import REPO, run_skiff

DEMO = "How do I keep a note from ever being sent to the cloud?"


@pytest.fixture(scope="module")
def default_model():
    from skiff.local.models import CATALOG, installed_file
    from skiff.assistant.model_choice import DEFAULT_MODEL
    from skiff.config.settings import default_data_dir

    saved = os.environ.pop("SKIFF_HOME", None)  # where README command 1 installed it
    try:
        path = installed_file(CATALOG[DEFAULT_MODEL], default_data_dir())
    finally:
        if saved is not None:
            os.environ["SKIFF_HOME"] = saved
    if path is None:
        pytest.fail(f"the default model {DEFAULT_MODEL} is not installed: scripts/setup.sh installs it "
                    f"(`skiff model install {DEFAULT_MODEL}`)")
    return path


@pytest.fixture
def demo_env(skiff_home, default_model):
    env = {**os.environ, "SKIFF_MODEL_PATH": str(default_model), "SKIFF_OFFLINE": "true"}
    run_skiff("index", str(REPO / "examples" / "notes"), env=env)
    return env


def test_the_default_model_answers_the_readme_demo_question_right(demo_env):
    answer = json.loads(run_skiff("ask", "--json", DEMO, env=demo_env, timeout=600).stdout)
    assert "private: true" in answer["answer"].replace("`", "")
    assert not answer["abstained"]
    assert any(source["path"].endswith("Privacy.md") for source in answer["sources"])


def test_the_default_model_says_when_the_notes_do_not_say(demo_env):
    answer = json.loads(run_skiff("ask", "--json", "What is the boiling point of tungsten?", env=demo_env,
                                  timeout=600).stdout)
    assert answer["abstained"], answer["abstention"]
    assert answer["answer"].startswith("My notes don't say.")
    assert answer["sources"] == []
