"""A real moto S3 server on a free loopback port, and the storage options that reach it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3

REGION = "us-east-1"
# Distinctive values, so a test can search logs, metadata and errors for any leak of them.
ACCESS_KEY_ID = "AKIAFEATUREPIPELINES7"
SECRET_ACCESS_KEY = "fp-test-secret-8d1f0c2b9e"


@dataclass(frozen=True)
class S3Endpoint:
    url: str

    def storage_options(self) -> dict[str, str]:
        """What deltalake 1.6 needs for a lake on this endpoint. Commits are safe without a
        locking provider: delta-rs 1.x writes each log entry with a conditional put
        (If-None-Match), which moto, like AWS S3 since 2024, enforces."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self):  # type: ignore[no-untyped-def]  # boto3 clients are untyped
        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def moto_s3() -> Iterator[S3Endpoint]:
    """Run `moto_server` as its own process on a free loopback port; stop it after.

    Not moto's in-process threaded server: some deltalake calls hold the GIL while they wait
    for HTTP, so a server thread in the same interpreter could never answer them.
    """
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(server, url)
        yield S3Endpoint(url)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_until_up(server: subprocess.Popen[bytes], url: str, timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited with {server.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    raise RuntimeError(f"moto_server did not answer on {url} within {timeout_seconds} s")
