"""A consumer process that kills itself (SIGKILL) mid-batch: after reading, or after its first applied chunk.

Run as `python -m feature_pipelines_tests.streaming.killed_consumer <redis url> <after_read|after_chunk|overlapped>`.
`overlapped` runs `StreamConsumer.run` (a batch applied while the next is read and judged) and dies
after the first applied chunk.
"""

from __future__ import annotations

import os
import signal
import sys

import redis

from feature_pipelines.features.flights import aircraft_utilisation
from feature_pipelines.streaming.consumer import ConsumerHooks, StreamConsumer
from feature_pipelines_tests.streaming.conftest import CARRIER_STREAM, KEYS


def _die(_: list[str]) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(url: str, moment: str) -> None:
    hooks = ConsumerHooks(after_read=_die) if moment == "after_read" else ConsumerHooks(after_chunk=_die)
    client = redis.Redis.from_url(url)
    consumer = StreamConsumer(client, [aircraft_utilisation, CARRIER_STREAM], table="raw_flights", keys=KEYS,
                              name="doomed", batch_size=200 if moment == "overlapped" else 400, chunk=150,
                              block_ms=1, hooks=hooks)
    if moment == "overlapped":
        consumer.run()
    consumer.run_once()
    raise SystemExit("the hook should have killed this process")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
