"""`skiff serve` as its clients meet it: the real `skiff` executable on loopback, the real model,
index and embedder, asked by the openai SDK and by curl; the cloud is llama.cpp's own server."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import SKIFF, run_skiff
from servers import LlamaServer, free_port

openai = pytest.importorskip("openai")


class Served:
    """`skiff serve` in a subprocess, with its log."""

    def __init__(self, env: dict, log: Path, *args: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - open for the server's life, closed by stop()
        self.process = subprocess.Popen([str(SKIFF), "serve", "--port", str(self.port), *args], env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("skiff serve did not come up\n" + log.read_text()[-3000:])
        self.key = (Path(env["SKIFF_HOME"]) / "serve_api_key").read_text().strip()

    def client(self, **kwargs) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.base_url, api_key=self.key, max_retries=0, **kwargs)

    def post(self, body, key: str | None = None, **kwargs) -> httpx.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.post(f"{self.base_url}/chat/completions", content=data, timeout=120,
                          headers={"Authorization": f"Bearer {key or self.key}"}, **kwargs)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def cloud():
    from skiff.local.assets import bundled_gguf_path

    server = LlamaServer(bundled_gguf_path(), api_key="sk-cloud-" + secrets.token_hex(12))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def serve_env(tmp_path_factory, shared_cache, cloud) -> dict:
    from conftest import VAULT, VAULT_SUBSET, fast_model_path

    if not VAULT.is_dir():
        pytest.skip("../shared/data/notes is not beside the repository")
    root = tmp_path_factory.mktemp("serve")
    vault = root / "vault"
    for relative in VAULT_SUBSET[:6]:
        (vault / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(VAULT / relative, vault / relative)
    (vault / "Diary.md").write_text("---\nprivate: true\n---\n# Diary\n\nThe boat's winter mooring code is "
                                    "tangerine-4471.\n", encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("SKIFF_")}
    env.update({"SKIFF_HOME": str(root / "home"), "SKIFF_CACHE_DIR": str(shared_cache),
                "SKIFF_MODEL_PATH": str(fast_model_path()), "SKIFF_MAX_TOKENS": "1000",
                "SKIFF_CLOUD_BASE_URL": cloud.base_url, "SKIFF_CLOUD_MODEL": cloud.alias,
                "SKIFF_CLOUD_API_KEY": cloud.api_key, "SKIFF_CLOUD_MAX_TOKENS": "24"})
    run_skiff("index", str(vault), env=env)
    return env


@pytest.fixture(scope="module")
def served(serve_env, tmp_path_factory):
    server = Served(serve_env, tmp_path_factory.mktemp("serve-log") / "serve.log")
    yield server
    assert server.stop() == 0, server.log_path.read_text()[-3000:]
    log = server.log_path.read_text()
    assert server.key not in log and serve_env["SKIFF_CLOUD_API_KEY"] not in log


def _record(env: dict, answer_id: str) -> dict:
    return json.loads(run_skiff("show", "--json", answer_id, env=env).stdout)


def test_the_openai_sdk_gets_a_recorded_answer_with_its_sources(served, serve_env):
    reply = served.client().chat.completions.create(
        model="skiff-local", max_tokens=24, messages=[{"role": "user", "content": "How do I link to another note?"}])
    message = reply.choices[0].message
    extra = message.model_extra["skiff"]
    assert message.content.strip()
    assert extra["answered_by"] == "local" and extra["sources"], extra
    assert any(source["path"].endswith(".md") for source in extra["sources"])
    assert reply.usage.completion_tokens > 0
    record = _record(serve_env, extra["answer_id"])
    assert record["answer"] == message.content and record["question"] == "How do I link to another note?"


def test_a_streamed_answer_is_the_recorded_one_and_says_where_it_came_from(served, serve_env):
    stream = served.client().chat.completions.create(
        model="skiff", stream=True, stream_options={"include_usage": True}, max_tokens=24,
        messages=[{"role": "user", "content": "What are callouts?"}])
    pieces, final, usage = [], None, None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        pieces.append(chunk.choices[0].delta.content or "")
        if chunk.choices[0].finish_reason is not None:
            final = chunk
    extra = final.model_extra["skiff"]
    assert extra["route"] in ("local", "local+", "cloud") and extra["reason"]
    assert usage is not None and usage.completion_tokens > 0
    record = _record(serve_env, extra["answer_id"])
    assert record["answer"] in "".join(pieces)


def test_history_rides_along_as_earlier_turns(served, serve_env):
    reply = served.client().chat.completions.create(model="skiff-local", max_tokens=8, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is a daily note?"},
        {"role": "assistant", "content": "A note for each day."},
        {"role": "user", "content": [{"type": "text", "text": "How do I open today's?"}]}])
    assert _record(serve_env, reply.choices[0].message.model_extra["skiff"]["answer_id"])["question"] == \
        "How do I open today's?"


def test_the_cloud_model_answers_from_the_cloud_and_private_notes_stay_home(served, serve_env):
    reply = served.client().chat.completions.create(
        model="skiff-cloud", max_tokens=24,
        messages=[{"role": "user", "content": "What is the boat's winter mooring code?"}])
    extra = reply.choices[0].message.model_extra["skiff"]
    assert extra["answered_by"] == "cloud", extra
    sent = _record(serve_env, extra["answer_id"])["sent"]
    assert sent and "tangerine-4471" not in json.dumps(sent)


def test_curl_streams_server_sent_events(served):
    if not shutil.which("curl"):
        pytest.skip("curl not installed")
    body = json.dumps({"model": "skiff-local", "stream": True, "max_tokens": 8,
                       "messages": [{"role": "user", "content": "What is a canvas?"}]})
    result = subprocess.run(["curl", "-sS", "-N", "--max-time", "120", "-H", f"Authorization: Bearer {served.key}",
                             "-H", "Content-Type: application/json", "-d", body, f"{served.base_url}/chat/completions"],
                            capture_output=True, text=True, timeout=150, check=True)
    events = [line[len("data: "):] for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and "skiff" in chunks[-1]


BAD_REQUESTS = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    ({"model": "skiff", "messages": []}, 400, "messages"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "temprature": 1}, 400, "unknown field"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"}, 400, "max_tokens"),
    ({"model": "skiff", "messages": [{"role": "user", "content": 42}]}, 400, "content"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "  "}]}, 400, "empty"),
    ({"model": "skiff", "messages": [{"role": "assistant", "content": "hello"}]}, 400, "last message"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n must be 1"),
    ({"model": "skiff", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 400,
     "skiff mcp"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "does not exist"),
    (b"x" * (1024 * 1024 + 10), 413, "larger than"),
]


@pytest.mark.parametrize("body, status, says", BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))])
def test_a_bad_request_gets_a_clear_openai_error_and_the_server_lives_on(served, body, status, says):
    response = served.post(body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert says in error["message"] and error["type"] and "Traceback" not in response.text
    assert httpx.get(f"http://127.0.0.1:{served.port}/health", timeout=5).status_code == 200


def test_a_missing_or_wrong_key_is_401_and_never_echoed(served):
    wrong = "sk-skiff-" + secrets.token_urlsafe(24)
    for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": served.key}):
        response = httpx.get(f"{served.base_url}/models", headers=headers, timeout=10)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert wrong not in response.text and served.key not in response.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.base_url, api_key=wrong, max_retries=0).models.list()
    assert [model.id for model in served.client().models.list()] == ["skiff", "skiff-local", "skiff-cloud"]


def test_feedback_by_answer_id_reaches_the_router(served, serve_env):
    reply = served.client().chat.completions.create(
        model="skiff-local", max_tokens=8, messages=[{"role": "user", "content": "How do I embed a file?"}])
    answer_id = reply.choices[0].message.model_extra["skiff"]["answer_id"]
    headers = {"Authorization": f"Bearer {served.key}"}
    given = httpx.post(f"{served.base_url}/skiff/feedback", json={"answer_id": answer_id, "verdict": "bad"},
                       headers=headers, timeout=30)
    assert given.status_code == 200 and given.json()["verdict"] == "bad"
    judged = json.loads(run_skiff("feedback", "bad", answer_id, "--json", env=serve_env).stdout)
    assert judged["changed"] is False  # the server's verdict was already standing
    unknown = httpx.post(f"{served.base_url}/skiff/feedback", json={"answer_id": "nope", "verdict": "good"},
                         headers=headers, timeout=30)
    assert unknown.status_code == 404 and "no answer" in unknown.json()["error"]["message"]


def test_a_client_that_leaves_mid_stream_frees_the_model_and_the_record_says_cancelled(served, serve_env):
    client = served.client()
    stream = client.chat.completions.create(
        model="skiff-local", stream=True, max_tokens=4000,
        messages=[{"role": "user", "content": "Write a very long essay about every way to format notes."}])
    answer_pieces = 0
    for chunk in stream:
        answer_pieces += bool(chunk.choices and chunk.choices[0].delta.content)
        if answer_pieces >= 3:
            break
    stream.close()
    left_at = time.monotonic()
    reply = client.chat.completions.create(model="skiff-local", max_tokens=1,
                                           messages=[{"role": "user", "content": "What is search?"}])
    waited = _record(serve_env, reply.choices[0].message.model_extra["skiff"]["answer_id"])["timings"]
    # The next answer waited for the model at most a second after the first client left.
    assert waited.get("queue_wait_s", 0.0) <= 1.0, (waited, time.monotonic() - left_at)
    cancelled = json.loads(run_skiff("show", "--json", env=serve_env).stdout)  # the latest: the short one
    assert cancelled["id"] == reply.choices[0].message.model_extra["skiff"]["answer_id"]
    records = _answers(serve_env)
    essay = next(r for r in records if r["question"].startswith("Write a very long essay"))
    assert essay["stop_reason"] == "cancelled"


def _answers(env: dict) -> list[dict]:
    import sqlite3

    path = Path(env["SKIFF_HOME"]) / "data" / "skiff.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT id, question, stop_reason FROM answers")]
    except sqlite3.OperationalError:  # no answer recorded yet: the table comes with the first
        return []
    finally:
        db.close()


def test_a_full_line_answers_429_with_retry_after_and_records_only_what_it_answered(serve_env, tmp_path):
    """No one may wait for the model (serve_queue_size 0): of several clients at once, those that
    find it writing are told to come back, and only the answers given are recorded."""
    server = Served({**serve_env, "SKIFF_SERVE_QUEUE_SIZE": "0"}, tmp_path / "serve.log")
    try:
        before = len(_answers(serve_env))
        body = {"model": "skiff-local", "max_tokens": 64,
                "messages": [{"role": "user", "content": "Write a long essay about templates."}]}
        responses: list[httpx.Response] = []
        clients = [threading.Thread(target=lambda: responses.append(server.post(body))) for _ in range(4)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(120)
        statuses = sorted(response.status_code for response in responses)
        assert len(statuses) == 4 and set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses, statuses
        for response in responses:
            if response.status_code == 429:
                assert int(response.headers["Retry-After"]) >= 1 and "busy" in response.json()["error"]["message"]
            else:
                assert response.json()["choices"][0]["message"]["content"]
        assert len(_answers(serve_env)) - before == statuses.count(200)
    finally:
        assert server.stop() == 0


def test_ctrl_c_lets_the_answer_in_progress_finish_then_stops(serve_env, tmp_path):
    server = Served(serve_env, tmp_path / "serve.log")
    body = {"model": "skiff-local", "stream": True, "max_tokens": 48,
            "messages": [{"role": "user", "content": "How do I create a template?"}]}
    lines: list[str] = []

    def read() -> None:
        with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=120,
                          headers={"Authorization": f"Bearer {server.key}"}) as response:
            lines.extend(response.iter_lines())

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 60
    while not lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stop() == 0
    reader.join(30)
    assert "data: [DONE]" in lines, lines[-3:]


def test_a_reachable_address_is_refused_without_the_flag(serve_env):
    result = run_skiff("serve", "--host", "0.0.0.0", "--port", str(free_port()), env=serve_env, check=False,
                       timeout=60)
    assert result.returncode == 2 and "--allow-remote" in result.stderr
