"""moto's S3 server over real HTTP on a free loopback port, for the tests of every store
that can live in a bucket (blob store, cold tier, replica, research export)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from moto.server import ThreadedMotoServer


@contextmanager
def moto_s3() -> Iterator[tuple[str, Any]]:
    """``(endpoint URL, an admin boto3 client)``; the server stops on exit."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        yield endpoint, admin
    finally:
        server.stop()
