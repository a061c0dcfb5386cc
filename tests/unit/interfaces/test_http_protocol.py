"""The HTTP server protocol of `cloudfilm serve` hands request bodies over without copying
them (``BoundedHttpToolsProtocol.on_body``): every byte must still arrive once, in order,
whether a piece finds the buffer empty or joins pieces the app has not read yet."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from cloudfilm.interfaces.api.server import BoundedHttpToolsProtocol


async def _digest_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(0.3)  # pieces pile up before the first read
    digest, size, reads = hashlib.sha256(), 0, 0
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        assert isinstance(message["body"], bytes)
        digest.update(message["body"])
        size += len(message["body"])
        reads += 1
        if not message.get("more_body"):
            break
    body = f"{size} {digest.hexdigest()} {reads}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(_digest_app, host="127.0.0.1", port=free,
                                           http=BoundedHttpToolsProtocol, log_level="warning",
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield free
    server.should_exit = True
    thread.join(timeout=20)


def _post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


def _answers(sock: socket.socket, count: int) -> list[str]:
    data = b""
    answers: list[str] = []
    while len(answers) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {answers}"
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            assert head.startswith(b"HTTP/1.1 200"), head
            answers.append(rest[:length].decode())
            data = rest[length:]
    return answers


def _expected(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


@pytest.mark.parametrize("path", ["/fast", "/slow"])
def test_a_body_sent_in_uneven_pieces_arrives_whole(port: int, path: str) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    request = _post(path, body)
    cuts = [0, 5, 70, 300_000, 300_001, 1_000_000, 2_500_000, len(request)]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for start, end in itertools.pairwise(cuts):
            sock.sendall(request[start:end])
            time.sleep(0.02)  # separate arrivals: fresh pieces and pieces that pile up
        (answer,) = _answers(sock, 1)
    assert answer.rsplit(" ", 1)[0] == _expected(body)


def test_pipelined_requests_on_one_connection_keep_their_own_bodies(port: int) -> None:
    bodies = [os.urandom(n) for n in (1, 200_000, 0, 700_000)]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"".join(_post("/slow", b) for b in bodies))
        answers = _answers(sock, len(bodies))
    assert [a.rsplit(" ", 1)[0] for a in answers] == [_expected(b) for b in bodies]
