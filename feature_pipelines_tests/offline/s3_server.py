"""A real moto S3 server on a free loopback port, and the storage options that reach it."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from moto.server import ThreadedMotoServer

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
    """Start moto's server in this process (threaded, real HTTP on loopback) and stop it after."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
