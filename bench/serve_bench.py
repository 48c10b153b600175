"""`skiff serve` under load, with clients that leave, and its overhead against `skiff ask`.

    .venv/bin/python bench/serve_bench.py load [--clients 16] [--questions 10] [--max-tokens 96]
    .venv/bin/python bench/serve_bench.py disconnects [--trials 10] [--seed 20261130]
    .venv/bin/python bench/serve_bench.py overhead [--questions 10] [--max-tokens 128]

The real `skiff serve` (default model) on loopback in its own home (bench/out/serve/home, the notes
benchmark's index of the Obsidian Help vault copied in), the bundled 135M model behind llama.cpp's
OpenAI-compatible server as the loopback cloud, and the openai SDK as every client. Questions are the
notes benchmark's dev split. Rows go to bench/out/serve/*.jsonl; figures to bench/out/serve_*.json.
Run it alone on the machine: it times things.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, percentile, save  # noqa: E402

HOME = OUT / "serve" / "home"
ROWS = OUT / "serve"
SKIFF = REPO / ".venv" / "bin" / "skiff"
PYTHON = REPO / ".venv" / "bin" / "python"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_up(url: str, process: subprocess.Popen, headers: dict | None = None, limit_s: float = 300) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[:3]} exited with {process.returncode}")
        try:
            if httpx.get(url, headers=headers or {}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not come up")


def questions(count: int) -> list[str]:
    rows = [json.loads(line) for line in (REPO / "bench" / "data" / "notes_qa_dev.jsonl").open()]
    return [row["question"] for row in rows if row["split"] == "dev"][:count]


class Rig:
    """The loopback cloud and `skiff serve` with the default model, in the bench's own home."""

    def __init__(self, queue_size: int = 8) -> None:
        from skiff.assistant.model_choice import current_model
        from skiff.config.settings import load_settings
        from skiff.local.assets import bundled_gguf_path

        default_model = current_model(load_settings()).require()
        self._prepare_home()
        cloud_key, cloud_port, self.port = "sk-cloud-" + secrets.token_hex(8), free_port(), free_port()
        self.logs = [open(ROWS / "cloud.log", "w"), open(ROWS / "serve.log", "w")]  # noqa: SIM115
        self.cloud = subprocess.Popen(
            [str(PYTHON), "-m", "llama_cpp.server", "--model", str(bundled_gguf_path()), "--model_alias", "cloud",
             "--host", "127.0.0.1", "--port", str(cloud_port), "--n_ctx", "8192", "--n_threads", "1"],
            env={**os.environ, "API_KEY": cloud_key}, stdout=self.logs[0], stderr=subprocess.STDOUT)
        wait_up(f"http://127.0.0.1:{cloud_port}/v1/models", self.cloud, {"Authorization": f"Bearer {cloud_key}"})
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("SKIFF_")},
                    "SKIFF_HOME": str(HOME), "SKIFF_CACHE_DIR": str(HOME / "cache"),
                    "SKIFF_MODEL_PATH": str(default_model),
                    "SKIFF_CLOUD_BASE_URL": f"http://127.0.0.1:{cloud_port}/v1", "SKIFF_CLOUD_MODEL": "cloud",
                    "SKIFF_CLOUD_API_KEY": cloud_key, "SKIFF_CLOUD_CONTEXT_TOKENS": "8192",
                    "SKIFF_SERVE_QUEUE_SIZE": str(queue_size)}
        self.serve = subprocess.Popen([str(SKIFF), "serve", "--port", str(self.port)], env=self.env,
                                      stdout=self.logs[1], stderr=subprocess.STDOUT)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        wait_up(f"http://127.0.0.1:{self.port}/health", self.serve)
        self.key = (HOME / "serve_api_key").read_text().strip()

    @staticmethod
    def _prepare_home() -> None:
        index = HOME / "data" / "index"
        if not index.exists():
            shutil.copytree(OUT / "notes_qa" / "home" / "data" / "index", index)
            shutil.copytree(OUT / "notes_qa" / "home" / "cache" / "embedder", HOME / "cache" / "embedder")
        (HOME / "data" / "skiff.sqlite3").unlink(missing_ok=True)  # each run's records are its own
        for suffix in ("-wal", "-shm"):
            (HOME / "data" / f"skiff.sqlite3{suffix}").unlink(missing_ok=True)

    def client(self, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.key, max_retries=0, timeout=600, **kwargs)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.serve.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def records(self) -> dict[str, dict]:
        db = sqlite3.connect(HOME / "data" / "skiff.sqlite3")
        try:
            rows = db.execute("SELECT id, answer, stop_reason, answered_by, timings, tokens FROM answers").fetchall()
        finally:
            db.close()
        return {r[0]: {"answer": r[1], "stop_reason": r[2], "answered_by": r[3], "timings": json.loads(r[4] or "{}"),
                       "tokens": json.loads(r[5] or "{}").get("completion", 0)} for r in rows}

    def stop(self) -> int:
        self.serve.send_signal(signal.SIGINT)
        code = self.serve.wait(120)
        self.cloud.terminate()
        self.cloud.wait(30)
        for log in self.logs:
            log.close()
        return code


def streamed(client, question: str, max_tokens: int, leave_after: int | None = None) -> dict:
    """One streamed answer as the client saw it; 429s are waited out as Retry-After says."""
    import openai

    tries, started = 0, time.perf_counter()
    while True:
        tries += 1
        sent = time.perf_counter()
        try:
            stream = client.chat.completions.create(model="skiff", stream=True, max_tokens=max_tokens,
                                                    messages=[{"role": "user", "content": question}])
        except openai.RateLimitError as busy:
            retry_after = float(busy.response.headers.get("Retry-After", "1"))
            if "Retry-After" not in busy.response.headers:
                return {"outcome": "429 without Retry-After", "tries": tries}
            time.sleep(retry_after)
            continue
        first = last = None
        text, extra, pieces = [], None, 0
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                last = time.perf_counter()
                text.append(chunk.choices[0].delta.content)
                pieces += 1
                if leave_after is not None and pieces >= leave_after:
                    stream.close()
                    return {"outcome": "left", "left_at": time.perf_counter(), "pieces": pieces, "tries": tries}
            if chunk.choices and chunk.choices[0].finish_reason:
                extra = chunk.model_extra.get("skiff")
        complete = extra is not None
        return {"outcome": "complete" if complete else "broken", "tries": tries, "text": "".join(text),
                "answer_id": extra and extra["answer_id"], "answered_by": extra and extra["answered_by"],
                "first_token_s": (first - sent) if first else None, "wait_s": sent - started,
                "stream_s": (last - first) if first and last else None, "pieces": pieces,
                "queue_wait_s": extra and extra["timings"]["queue_wait_s"]}


def _summary(rows: list[dict]) -> dict:
    done = [row for row in rows if row["outcome"] == "complete" and row["first_token_s"] is not None]
    ttft = [row["first_token_s"] for row in done]
    queue = [row["queue_wait_s"] or 0.0 for row in done]
    return {"requests": len(rows), "complete": len(done), "retried_after_429": sum(row["tries"] > 1 for row in rows),
            "429s": sum(row["tries"] - 1 for row in rows),
            "ttft_p50_s": round(percentile(ttft, 50), 3) if ttft else None,
            "ttft_p95_s": round(percentile(ttft, 95), 3) if ttft else None,
            "queue_wait_p50_s": round(percentile(queue, 50), 3) if queue else None,
            "queue_wait_p95_s": round(percentile(queue, 95), 3) if queue else None,
            "answered_by": {who: sum(row["answered_by"] == who for row in done) for who in ("local", "cloud")}}


def load(args) -> None:
    rig = Rig()
    asked = questions(args.questions)
    try:
        rss = [("started", rig.rss_mb())]
        single = [streamed(rig.client(), question, args.max_tokens) for question in asked]
        rss.append(("after one client", rig.rss_mb()))
        rows: list[dict] = []
        lock = threading.Lock()

        def one_client(number: int) -> None:
            client = rig.client()
            for question in asked[number % len(asked):] + asked[:number % len(asked)]:
                row = {"client": number, **streamed(client, question, args.max_tokens)}
                with lock:
                    rows.append(row)

        sampling, stop = [], threading.Event()

        def sample_rss() -> None:
            while not stop.wait(2.0):
                sampling.append(rig.rss_mb())

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        walls = []
        for round_number in range(1, args.rounds + 1):  # a second round shows whether memory keeps growing
            started = time.perf_counter()
            clients = [threading.Thread(target=one_client, args=(n,)) for n in range(args.clients)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            walls.append(round(time.perf_counter() - started, 1))
            rss.append((f"after crowd round {round_number}", rig.rss_mb()))
        stop.set()
        recorded = rig.records()
    finally:
        code = rig.stop()
    ids = [row["answer_id"] for row in single + rows if row.get("answer_id")]
    lost = [i for i in ids if i not in recorded]
    mismatched = [i for i in ids if i in recorded and recorded[i]["answer"] not in "".join(
        row["text"] for row in single + rows if row.get("answer_id") == i)]
    (ROWS / "load.jsonl").write_text("".join(json.dumps(row) + "\n" for row in single + rows))
    save("serve_load", {
        "clients": args.clients, "questions_each": len(asked), "max_tokens": args.max_tokens,
        "rounds": args.rounds, "single_client": _summary(single), "crowd": _summary(rows), "crowd_wall_s": walls,
        "records": len(recorded), "answers_given": len(ids), "duplicate_answer_ids": len(ids) - len(set(ids)),
        "lost": len(lost), "recorded_text_differs": len(mismatched),
        "rss_mb": {name: round(value, 1) for name, value in rss},
        "rss_mb_during_crowd": {"min": round(min(sampling), 1), "max": round(max(sampling), 1)} if sampling else None,
        "serve_exit_code": code})


def disconnects(args) -> None:
    rig = Rig()
    rng = random.Random(args.seed)
    asked = questions(args.trials)
    rows = []
    try:
        client = rig.client()
        for question in asked:
            leave_after = rng.randint(1, 24)
            left = streamed(client, question, 400, leave_after=leave_after)
            probe = streamed(client, "What is a vault?", 1)
            rows.append({"question": question, "leave_after": leave_after, **left,
                         "probe_queue_wait_s": probe["queue_wait_s"], "probe_answer_id": probe["answer_id"]})
        recorded = rig.records()
    finally:
        code = rig.stop()
    cancelled = sum(r["stop_reason"] == "cancelled" for r in recorded.values())
    waits = [row["probe_queue_wait_s"] or 0.0 for row in rows]
    (ROWS / "disconnects.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    save("serve_disconnects", {
        "trials": len(rows), "seed": args.seed, "left": sum(row["outcome"] == "left" for row in rows),
        "records_cancelled": cancelled, "model_free_again_max_s": round(max(waits), 3),
        "model_free_again_p50_s": round(statistics.median(waits), 3), "within_1s": sum(w <= 1.0 for w in waits),
        "serve_exit_code": code})


def overhead(args) -> None:
    """The same questions through `skiff serve`'s skiff-local (the openai SDK, streaming) and
    through the pipeline `skiff ask --route local` runs, warm in this process (the baseline), in
    alternating order, greedy: time to first token and tokens per second, each measured where its
    caller sees the tokens. `skiff ask` itself, cold from a shell (its model loaded per run), is
    reported beside them."""
    rig = Rig()
    rows = []
    try:
        os.environ.update(rig.env)  # the in-process pipeline reads the same home and model
        from skiff.assistant import Assistant
        from skiff.config.settings import load_settings

        library = Assistant(load_settings(offline=True, max_tokens=args.max_tokens))
        library.ask("What is a vault?", route="local")  # warm: the model, embedder and index loaded
        client = rig.client()
        for number, question in enumerate(questions(args.questions)):
            sides = [("serve", lambda q=question: _through_serve(client, rig, q, args.max_tokens)),
                     ("pipeline", lambda q=question: _through_pipeline(library, q))]
            row = {"question": question}
            for name, run in sides if number % 2 == 0 else sides[::-1]:
                row.update({f"{name}_{key}": value for key, value in run().items()})
            if number < args.cold:  # `skiff ask` from a shell loads its model each time: a few are enough
                cold = subprocess.run([str(SKIFF), "ask", "--route", "local", "--json", "--max-tokens",
                                       str(args.max_tokens), "--offline", question],
                                      env=rig.env, capture_output=True, text=True, check=True)
                answer = json.loads(cold.stdout)
                row.update({"cli_cold_first_token_s": answer["timings"]["first_token_s"],
                            "cli_cold_tokens_per_s": answer["timings"]["decode_tokens_per_s"]})
            rows.append(row)
        library.close()
    finally:
        code = rig.stop()
    (ROWS / "overhead.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    both = [row for row in rows if row["serve_tokens_per_s"] and row["pipeline_tokens_per_s"]]
    extra_ms = [(row["serve_first_token_s"] - row["pipeline_first_token_s"]) * 1000 for row in rows]
    serving_ms = [(row["serve_first_token_s"] - row["serve_inside_first_token_s"]) * 1000 for row in rows]
    speed = [row["serve_tokens_per_s"] / row["pipeline_tokens_per_s"] for row in both]
    cold = [row for row in rows if "cli_cold_first_token_s" in row]
    save("serve_overhead", {
        "questions": len(rows), "max_tokens": args.max_tokens,
        "same_answers": sum(row["serve_text"] == row["pipeline_text"] for row in rows),
        "pipeline_first_token_p50_s": round(statistics.median(r["pipeline_first_token_s"] for r in rows), 3),
        "serve_first_token_p50_s": round(statistics.median(r["serve_first_token_s"] for r in rows), 3),
        "first_token_extra_ms_p50": round(statistics.median(extra_ms), 1),
        "first_token_extra_ms_p50_ci95": _median_interval(extra_ms),
        "first_token_extra_ms_range": [round(min(extra_ms), 1), round(max(extra_ms), 1)],
        # The same request seen by the client and by the pipeline inside the server: HTTP, the
        # thread hop and the first event, with none of two processes' prompt timings between them.
        "serving_overhead_ms_p50": round(statistics.median(serving_ms), 1),
        "serving_overhead_ms_max": round(max(serving_ms), 1),
        "pipeline_tokens_per_s_p50": round(statistics.median(r["pipeline_tokens_per_s"] for r in both), 2),
        "serve_tokens_per_s_p50": round(statistics.median(r["serve_tokens_per_s"] for r in both), 2),
        "serve_over_pipeline_speed_p50": round(statistics.median(speed), 3),
        "serve_over_pipeline_speed_p50_ci95": _median_interval(speed, digits=3),
        "serve_over_pipeline_speed_range": [round(min(speed), 3), round(max(speed), 3)],
        "cli_cold_questions": len(cold),
        "cli_cold_first_token_p50_s": round(statistics.median(r["cli_cold_first_token_s"] for r in cold), 3),
        "cli_cold_tokens_per_s_p50": round(statistics.median(r["cli_cold_tokens_per_s"] for r in cold), 2),
        "serve_exit_code": code})


def _median_interval(values: list[float], digits: int = 1, draws: int = 2000) -> list[float]:
    """A 95% bootstrap interval of the median (seeded)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return [round(medians[int(0.025 * draws)], digits), round(medians[int(0.975 * draws) - 1], digits)]


def _arrivals(times: list[float], tokens: int, sent: float) -> dict:
    """Time to the first piece, and the tokens after the first over the time they took to arrive."""
    if not times:
        return {"first_token_s": None, "tokens_per_s": None, "tokens": tokens}
    spread = times[-1] - times[0]
    return {"first_token_s": times[0] - sent, "tokens": tokens,
            "tokens_per_s": (tokens - 1) / spread if spread > 0 and tokens > 1 else None}


def _through_serve(client, rig: Rig, question: str, max_tokens: int) -> dict:
    times, text, extra = [], [], None
    sent = time.perf_counter()
    stream = client.chat.completions.create(model="skiff-local", stream=True, max_tokens=max_tokens,
                                            messages=[{"role": "user", "content": question}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
            text.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            extra = chunk.model_extra["skiff"]
    record = rig.records()[extra["answer_id"]]
    return {**_arrivals(times, record["tokens"], sent), "text": "".join(text),
            "inside_first_token_s": record["timings"]["first_token_s"]}


def _through_pipeline(library, question: str) -> dict:
    times: list[float] = []
    sent = time.perf_counter()
    answer = library.ask(question, route="local", on_token=lambda piece: times.append(time.perf_counter()))
    return {**_arrivals(times, int(answer.tokens["completion"]), sent), "text": answer.text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    crowd = commands.add_parser("load")
    crowd.add_argument("--clients", type=int, default=16)
    crowd.add_argument("--questions", type=int, default=10)
    crowd.add_argument("--max-tokens", type=int, default=96)
    crowd.add_argument("--rounds", type=int, default=2)
    leaving = commands.add_parser("disconnects")
    leaving.add_argument("--trials", type=int, default=10)
    leaving.add_argument("--seed", type=int, default=20261130)
    cost = commands.add_parser("overhead")
    cost.add_argument("--questions", type=int, default=30)
    cost.add_argument("--cold", type=int, default=10, help="questions also asked of a cold `skiff ask`")
    cost.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    ROWS.mkdir(parents=True, exist_ok=True)
    {"load": load, "disconnects": disconnects, "overhead": overhead}[args.command](args)


if __name__ == "__main__":
    main()
