"""A real `feature-pipelines serve` process on a free loopback port, for tests that need uvicorn."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
RUN_CLI = (
    "import argparse, sys\n"
    "from feature_pipelines.serving.cli import add_serve_parser, add_redis_parsers\n"
    "parser = argparse.ArgumentParser()\n"
    "verbs = parser.add_subparsers(dest='verb', required=True)\n"
    "add_serve_parser(verbs); add_redis_parsers(verbs)\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.handler(args))\n"
)
# Variables a developer's shell may hold that would change what the server requires.
_UNSET = ("FEATURE_PIPELINES_API_KEY", "FEATURE_PIPELINES_CONSUMERS", "FEATURE_PIPELINES_REDIS_PASSWORD")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServeProcess:
    base: str
    port: int
    output: str = ""
    returncode: int | None = None
    _pids: list[int] = field(default_factory=list)


@contextmanager
def serve_process(env: Mapping[str, str], args: Sequence[str] = (), *, ready_within_s: float = 30) -> Iterator[ServeProcess]:
    """Start `serve` with `env` over a clean copy of this environment, wait for /health, and on
    exit interrupt it (SIGINT: uvicorn shuts down, flushing request logs), keeping its output and
    exit code on the returned object."""
    port = free_port()
    full_env = {key: value for key, value in os.environ.items() if key not in _UNSET}
    full_env.update({"PYTHONPATH": str(REPO), **env})
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, "serve", "--port", str(port), "--log-level", "warning", *args],
        env=full_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    served = ServeProcess(base=f"http://127.0.0.1:{port}", port=port)
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            try:
                if httpx.get(f"{served.base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "server did not become healthy"
            time.sleep(0.1)
        yield served
    finally:
        os.killpg(process.pid, signal.SIGINT)
        served.output = process.communicate(timeout=30)[0].decode(errors="replace")
        served.returncode = process.returncode
