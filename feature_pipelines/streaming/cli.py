"""`feature-pipelines stream`: the stream consumer, in the foreground until Ctrl-C, or in the
background for the demo (`--background`, then `--stop`), as `redis-up` / `redis-down` do for Redis.

The background consumer's state lives in one directory (default data/stream):

    state_dir/stream.pid   the consumer's process id (only a process whose command line is this
                           verb is ever signalled: a stale pid may belong to another process)
    state_dir/stream.log   its progress lines and its summary at exit
    state_dir/stream.identity  the code and Redis target it runs: `--background` restarts a consumer
                           whose code was updated or whose Redis changed since it started
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from feature_pipelines.online.client import RedisTarget
from feature_pipelines.streaming.defaults import DEFAULT_BATCH_SIZE

DEFAULT_STATE_DIR = Path(__file__).resolve().parents[2] / "data" / "stream"
PID_FILE, LOG_FILE, IDENTITY_FILE = "stream.pid", "stream.log", "stream.identity"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
READY = "consuming"  # the start of the line the consumer prints once its groups exist
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def add_stream_parser(subparsers: Any, target_from_env: Callable[[], RedisTarget]) -> argparse.ArgumentParser:
    """Register `stream` on the CLI's subparsers; `target_from_env` gives the online store and its
    key prefix as the feature server reads them (the stream's keys live under that prefix)."""
    parser = subparsers.add_parser(
        "stream", help="run the stream consumer against FEATURE_PIPELINES_REDIS_URL until Ctrl-C (or --background / --stop)"
    )
    parser.add_argument("--every", type=float, default=5.0, help="seconds between progress lines (default 5)")
    parser.add_argument("--name", default=f"consumer-{os.uname().nodename}",
                        help="consumer name in the group (a restart under the same name resumes its pending entries)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"entries read per batch (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--consumers", type=int, default=1,
                        help="consumer processes of the group, named <name>-1 ... (default 1: one process, a thread "
                             "a table); more spread the judging and folding over that many cores")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--background", action="store_true", help="start it detached, pid and log under --state-dir")
    mode.add_argument("--stop", action="store_true", help="stop the consumer started by --background, print its summary")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"where the background consumer's pid and log live (default {DEFAULT_STATE_DIR})")
    parser.set_defaults(handler=partial(stream, target_from_env=target_from_env))
    return parser


def stream(args: argparse.Namespace, *, target_from_env: Callable[[], RedisTarget]) -> int:
    if args.every <= 0 or args.batch_size < 1 or args.consumers < 1:
        print("stream: --every must be > 0, --batch-size >= 1 and --consumers >= 1", file=sys.stderr)
        return 2
    if args.stop:
        return _stop(Path(args.state_dir))
    if args.background:
        return _background(args, target_from_env)
    return _foreground(args, target_from_env)


def _foreground(args: argparse.Namespace, target_from_env: Callable[[], RedisTarget]) -> int:
    import redis

    from feature_pipelines.features.catalog import FEATURE_VIEWS
    from feature_pipelines.online.client import RedisConfigError
    from feature_pipelines.streaming.keys import stream_keys
    from feature_pipelines.streaming.runner import StreamRunError, run_stream

    try:
        target = target_from_env()
        target.client().ping()
    except (RedisConfigError, ValueError, redis.RedisError) as error:
        print(f"stream: {error}", file=sys.stderr)
        return 2
    keys = stream_keys(target.validated_prefix())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        summary = run_stream(
            target.client, FEATURE_VIEWS, keys=keys, stop=stop, name=args.name, progress_every=args.every,
            batch_size=args.batch_size, processes=args.consumers, on_progress=lambda progress: print(progress.line(), flush=True),
            on_ready=lambda tables: print(f"{READY} {', '.join(keys.events(t) for t in tables)} as {args.name!r} "
                                          f"({target.describe()}); Ctrl-C to stop", flush=True),
        )
    except StreamRunError as error:
        print(f"stream: {error}", file=sys.stderr)
        return 2
    print(summary.summary(), flush=True)
    return 0


def _read_pid(state_dir: Path) -> int | None:
    try:
        text = (state_dir / PID_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _is_our_consumer(pid: int) -> bool:
    """Whether `pid` is alive and runs this verb (a recycled pid is someone else's process)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return b"feature_pipelines.cli" in command and b"stream" in command


def consumer_identity(target: str) -> str:
    """What a background consumer runs: the package's code (a hash of its sources) and its Redis
    target. A consumer started with another one (code updated since, another Redis) is restarted."""
    digest = hashlib.sha256(target.encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _background(args: argparse.Namespace, target_from_env: Callable[[], RedisTarget]) -> int:
    state_dir = Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    identity = consumer_identity(target_from_env().describe())
    running = _read_pid(state_dir)
    if running is not None and _is_our_consumer(running):
        started_as = (state_dir / IDENTITY_FILE).read_text().strip() if (state_dir / IDENTITY_FILE).exists() else ""
        if started_as == identity:
            print(f"stream consumer already running (pid {running}); log: {state_dir / LOG_FILE}")
            return 0
        print(f"stream: restarting the consumer (pid {running}): its code or its Redis target changed since it started")
        if _stop(state_dir) != 0:
            return 1
    log_path = state_dir / LOG_FILE
    command = [sys.executable, "-m", "feature_pipelines.cli", "stream", "--every", str(args.every),
               "--name", args.name, "--batch-size", str(args.batch_size), "--consumers", str(args.consumers)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # Ctrl-C in the demo's shell does not reach it
    (state_dir / PID_FILE).write_text(f"{process.pid}\n")
    (state_dir / IDENTITY_FILE).write_text(f"{identity}\n")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (state_dir / PID_FILE).unlink(missing_ok=True)
            print(f"stream: the consumer exited with code {process.returncode}:\n{log_path.read_text()[-2000:]}",
                  file=sys.stderr)
            return 1
        if any(line.startswith(READY) for line in log_path.read_text().splitlines()):
            print(f"stream consumer running in the background (pid {process.pid}); log: {log_path}; "
                  "stop it with `feature-pipelines stream --stop`")
            return 0
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    print(f"stream: the consumer did not start within {STARTUP_TIMEOUT_S:.0f} s; see {log_path}", file=sys.stderr)
    return 1


def _stop(state_dir: Path) -> int:
    pid = _read_pid(state_dir)
    if pid is None or not _is_our_consumer(pid):
        (state_dir / PID_FILE).unlink(missing_ok=True)
        print("no stream consumer was running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_our_consumer(pid) and time.monotonic() < deadline:
        try:  # our own child when started by this process (tests): reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if _is_our_consumer(pid):
        print(f"stream: the consumer (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f} s", file=sys.stderr)
        return 1
    (state_dir / PID_FILE).unlink(missing_ok=True)
    summary = [line for line in (state_dir / LOG_FILE).read_text().splitlines() if line.startswith("stream stopped")]
    print(summary[-1] if summary else f"stopped the stream consumer (pid {pid}); log: {state_dir / LOG_FILE}")
    return 0
