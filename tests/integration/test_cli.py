"""The real `skiff` executable, as a person runs it."""

from __future__ import annotations

import json
import os

import pytest

from conftest import run_skiff


def test_version_is_fast_and_needs_no_models():
    assert run_skiff("--version").stdout.startswith("skiff ")


def test_index_ask_status_json_round_trip(skiff_home, vault):
    (vault / "Boathouse.md").write_text("# Boathouse\n\nThe boathouse door code is 7319.\n")
    summary = json.loads(run_skiff("index", str(vault), "--json").stdout)
    assert {"files_seen", "indexed", "unchanged", "removed", "skipped", "chunks_total", "seconds"} <= set(summary)
    assert summary["indexed"] == summary["files_seen"] == 13

    answer = json.loads(run_skiff("ask", "--json", "What is the boathouse door code?").stdout)
    assert {"answer", "route", "sources", "timings", "tokens"} <= set(answer)
    assert answer["answered_by"] == "local" and answer["sources"][0]["path"].endswith("Boathouse.md")
    assert answer["route"] in ("local", "local+", "cloud")
    signals = answer["decision"]["signals"]
    assert 0 <= signals["sigma2"] < 1 and signals["gain_std"] > 0 and "σ²=" in answer["decision"]["reason"]
    assert signals["score"] == pytest.approx(signals["gain_mean"] + signals["beta"] * signals["gain_std"], abs=1e-3)
    assert {"retrieve_s", "first_token_s", "total_s"} <= set(answer["timings"])
    assert answer["tokens"]["completion"] > 0

    status = json.loads(run_skiff("status", "--json").stdout)
    assert status["index"]["files"] == 13 and status["index"]["chunks"] == summary["chunks_total"]
    assert status["cloud"] == "none" and status["model"]["quantization"] == "Q4_1"
    assert status["data_dir"] == str(skiff_home / "data") and status["config_file"] == str(skiff_home / "config.toml")


def test_ask_streams_text_then_sources(skiff_home, vault):
    run_skiff("index", str(vault))
    result = run_skiff("ask", "How do I link to a heading in another note?")
    body, _, sources = result.stdout.partition("\nSources\n")
    assert body.strip() and sources.startswith("[1] ")
    assert "lines " in sources and "Internal links.md" in sources
    assert "local" in result.stderr


def test_ask_no_notes_prints_no_sources(skiff_home, vault):
    run_skiff("index", str(vault))
    result = run_skiff("ask", "--no-notes", "--max-tokens", "8", "Say hi.")
    assert "Sources" not in result.stdout


def test_config_precedence_and_masked_secret(skiff_home):
    (skiff_home / "config.toml").write_text('top_k = 7\nmax_tokens = 99\ncloud_api_key = "sk-file-secret-123"\n')
    env = {**os.environ, "SKIFF_MAX_TOKENS": "55"}
    settings = json.loads(run_skiff("config", "--json", env=env).stdout)["settings"]
    assert settings["top_k"] == 7  # from the file
    assert settings["max_tokens"] == 55  # the environment beats the file
    assert settings["cloud_api_key"] == "********"
    human = run_skiff("config", env=env)
    assert "sk-file-secret-123" not in human.stdout + human.stderr
    # A CLI flag beats both.
    assert run_skiff("ask", "--json", "--no-notes", "--max-tokens", "3", "hi", env=env).stdout.count('"completion": 3')


def test_bad_config_is_a_clear_error(skiff_home):
    (skiff_home / "config.toml").write_text("top_k = -4\n")
    result = run_skiff("status", check=False)
    assert result.returncode == 2 and "invalid configuration" in result.stderr and "top_k" in result.stderr
    (skiff_home / "config.toml").write_text("this is = = not toml\n")
    result = run_skiff("config", check=False)
    assert result.returncode == 2 and "invalid configuration" in result.stderr


def test_missing_model_file_is_a_clear_error(skiff_home):
    result = run_skiff("ask", "--model", "/nonexistent/model.gguf", "--no-notes", "hi", check=False)
    assert result.returncode == 2 and "model file not found" in result.stderr
