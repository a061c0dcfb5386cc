"""uvicorn's httptools protocol with a bound on the request head (request line + headers).

httptools (llhttp) has no limit of its own: a 2 MB header was accepted and buffered, and
nothing stops 200 MB. uvicorn's h11 protocol has one (``h11_max_incomplete_event_size``)
but moved request bodies ~40% slower here (20 vs 35 MB/s on a 256 MB POST), which STOW-RS
uploads would pay. This subclass counts the bytes that arrive while a request's head is
still incomplete and answers 431 (RFC 6585) once they pass the same
``h11_max_incomplete_event_size`` setting, so both protocols share one knob
(``http.max_header_bytes``).

It also hands request bodies to the app without copying them (:meth:`on_body`).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_MESSAGE = b"request line and headers are too large\r\n"
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
              b"content-type: text/plain; charset=utf-8\r\n"
              b"connection: close\r\n"
              b"content-length: " + str(len(_MESSAGE)).encode() + b"\r\n\r\n" + _MESSAGE)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Refuse a request whose head exceeds ``config.h11_max_incomplete_event_size``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit = int(self.config.h11_max_incomplete_event_size or 64 * 1024)
        self._head_bytes = 0
        self._head_open = True  # bytes arriving now belong to a request head
        self._completed = 0

    def data_received(self, data: bytes) -> None:
        completed = self._completed
        super().data_received(data)
        if self._completed != completed:
            self._head_bytes = 0  # a request ended inside this chunk: count from the next
            return
        if not self._head_open or self.transport.is_closing():
            return
        # The whole chunk went into a head that is still incomplete.
        self._head_bytes += len(data)
        if self._head_bytes > self._head_limit:
            self.logger.warning("request head larger than %d bytes refused", self._head_limit)
            self._head_open = False
            self.transport.write(_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._head_open = False
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Keep the piece httptools made as it is until the app reads it.

        uvicorn appends each piece to a ``bytearray`` and the app's ``receive()`` copies
        that into ``bytes``: two copies of every uploaded byte on the event loop (~0.2 ms
        per 525 KB STOW-RS instance, more when the fresh buffers fault their pages in).
        ``receive()`` hands a ``bytes`` buffer over as it is (``bytes(b) is b``), so when
        nothing is waiting the piece itself becomes the buffer; otherwise uvicorn's own
        path appends it. Flow control is unchanged (reading pauses above the high-water
        mark until the app reads).
        """
        cycle = self.cycle
        if (cycle is None or cycle.body or cycle.response_complete
                or self.parser.should_upgrade()):
            if cycle is not None and not isinstance(cycle.body, bytearray):
                cycle.body = bytearray(cycle.body)  # a piece kept whole: uvicorn appends
            super().on_body(body)
            return
        cycle.body = body  # type: ignore[assignment]
        if len(body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._completed += 1
        self._head_open = True
        self._head_bytes = 0
