"""The TUI in a real terminal (tmux): first paint and time to interactive of `skiff` next to
Textual's own minimal app, keystroke-to-echo latency while an answer streams, memory after
loading.

    .venv/bin/python bench/tui_startup.py --runs 5

First paint: from starting the program to its first screen in the pane. Time to interactive:
to the model being ready (for the minimal app, its first paint). Echo: a key sent while an
answer is streaming, until it shows in the input box. Timings poll the pane every 10 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

SKIFF = Path(sys.executable).parent / "skiff"
MINIMAL_APP = '''
from textual.app import App
from textual.widgets import Label
class Minimal(App):
    def compose(self):
        yield Label("minimal-ready")
Minimal().run()
'''


def tmux(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", *args], capture_output=True, text=True)


def pane(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session).stdout


def wait_for(session: str, text: str, timeout: float = 180.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if text in pane(session):
            return time.perf_counter()
        time.sleep(0.01)
    raise RuntimeError(f"{text!r} did not appear in {session}")


def start(session: str, command: list[str], env: dict[str, str]) -> float:
    tmux("kill-session", "-t", session)
    env_args = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    started = time.perf_counter()
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "32", *env_args, " ".join(command))
    return started


def rss_mb(session: str) -> float:
    pid = tmux("list-panes", "-t", session, "-F", "#{pane_pid}").stdout.strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="skiff-tui-bench-"))
    env = {"SKIFF_HOME": str(home), "SKIFF_CACHE_DIR": os.environ.get("SKIFF_CACHE_DIR", str(home / "cache")),
           "SKIFF_MAX_TOKENS": "1024"}
    minimal = home / "minimal.py"
    minimal.write_text(MINIMAL_APP)
    samples: dict[str, list[float]] = {"skiff first paint": [], "skiff time to interactive": [],
                                        "minimal first paint": [], "skiff RSS after loading (MB)": [],
                                        "echo while streaming (ms)": []}
    streaming_throughout: list[bool] = []
    # One untimed start exports the embedder to the cache, as a first run on a laptop would.
    start("bench-skiff", [str(SKIFF)], env)
    wait_for("bench-skiff", "ready")
    tmux("kill-session", "-t", "bench-skiff")
    for _ in range(args.runs):
        started = start("bench-minimal", [sys.executable, str(minimal)], env)
        samples["minimal first paint"].append(wait_for("bench-minimal", "minimal-ready") - started)
        tmux("kill-session", "-t", "bench-minimal")

        started = start("bench-skiff", [str(SKIFF)], env)
        samples["skiff first paint"].append(wait_for("bench-skiff", "Chats") - started)
        samples["skiff time to interactive"].append(wait_for("bench-skiff", "ready") - started)
        time.sleep(1.0)
        samples["skiff RSS after loading (MB)"].append(rss_mb("bench-skiff"))
        tmux("send-keys", "-t", "bench-skiff", "-l", "Write a long story about a lighthouse keeper.")
        tmux("send-keys", "-t", "bench-skiff", "Enter")
        wait_for("bench-skiff", "lighthouse keeper.")
        time.sleep(1.5)  # well into the stream
        tmux("send-keys", "-t", "bench-skiff", "-l", "QQ")
        wait_for("bench-skiff", "QQ", 10)
        for marker in ("QQz", "QQzx", "QQzxw"):
            sent = time.perf_counter()
            tmux("send-keys", "-t", "bench-skiff", "-l", marker[-1])
            samples["echo while streaming (ms)"].append((wait_for("bench-skiff", marker, 10) - sent) * 1000)
        # The badge (" tok") appears when the answer ends: it must not have, or this was not "while streaming".
        streaming_throughout.append(" tok" not in pane("bench-skiff"))
        tmux("kill-session", "-t", "bench-skiff")
    figures = {name: {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                      "max": round(max(values), 3), "n": len(values)} for name, values in samples.items()}
    save("tui_startup", {"runs": args.runs, "terminal": "tmux 120x32", "figures": figures,
                         "echo_runs_still_streaming": f"{sum(streaming_throughout)} of {len(streaming_throughout)}"})


if __name__ == "__main__":
    main()
