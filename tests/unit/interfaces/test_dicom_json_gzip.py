"""Large DICOM JSON answers (a series' metadata) are gzipped for clients that accept it."""

from __future__ import annotations

import gzip

import orjson
from starlette.requests import Request

from cloudfilm.interfaces.api.dicomweb.common import dicom_json


def _request(accept_encoding: str) -> Request:
    return Request({"type": "http", "method": "GET", "scheme": "http", "path": "/",
                    "root_path": "", "query_string": b"", "server": ("testserver", 80),
                    "headers": [(b"host", b"testserver"),
                                (b"accept-encoding", accept_encoding.encode())]})


def test_large_answers_are_gzipped_when_accepted() -> None:
    docs = [{"00080018": {"vr": "UI", "Value": [f"1.2.3.{i}"]}} for i in range(2000)]
    packed = dicom_json(_request("gzip, deflate"), docs)
    assert packed.headers["content-encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(packed.body)) == docs
    assert len(packed.body) < len(orjson.dumps(docs)) / 4
    plain = dicom_json(_request("identity"), docs)
    assert "content-encoding" not in plain.headers and orjson.loads(plain.body) == docs
    small = dicom_json(_request("gzip"), docs[:2])
    assert "content-encoding" not in small.headers  # not worth it
