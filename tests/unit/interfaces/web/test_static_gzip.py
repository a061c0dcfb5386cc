"""The build's gzip copies (web/compress.mjs) are sent to browsers that accept gzip, with
the original's media type; others get the file itself."""

from __future__ import annotations

import gzip
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloudfilm.interfaces.web.pages import CachedStatic


def test_gzip_copy_only_to_who_accepts_it(tmp_path: Path) -> None:
    body = b"export const x = 1;\n" * 500
    (tmp_path / "app-1.js").write_bytes(body)
    (tmp_path / "app-1.js.gz").write_bytes(gzip.compress(body))
    (tmp_path / "plain-1.js").write_bytes(body)
    app = FastAPI()
    app.mount("/s", CachedStatic(directory=tmp_path), name="s")
    client = TestClient(app)

    packed = client.get("/s/app-1.js", headers={"Accept-Encoding": "gzip, deflate"})
    assert packed.status_code == 200 and packed.content == body  # decoded by the client
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-type"].startswith("text/javascript")
    assert "immutable" in packed.headers["cache-control"]
    assert int(packed.headers["content-length"]) < len(body)

    raw = client.get("/s/app-1.js", headers={"Accept-Encoding": "identity"})
    assert raw.content == body and "content-encoding" not in raw.headers
    assert client.get("/s/plain-1.js").content == body  # no copy: the file itself
    assert client.get("/s/missing.js").status_code == 404


def test_brotli_copy_first_to_who_accepts_it(tmp_path: Path) -> None:
    body = b"export const y = 2;\n" * 500
    (tmp_path / "app-2.js").write_bytes(body)
    (tmp_path / "app-2.js.gz").write_bytes(gzip.compress(body))
    (tmp_path / "app-2.js.br").write_bytes(b"brotli bytes")  # sent as they are, never read
    app = FastAPI()
    app.mount("/s", CachedStatic(directory=tmp_path), name="s")
    client = TestClient(app)

    def get(accept: str) -> tuple[str | None, int]:
        with client.stream("GET", "/s/app-2.js", headers={"Accept-Encoding": accept}) as r:
            assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
            return r.headers.get("content-encoding"), int(r.headers["content-length"])

    assert get("gzip, deflate, br, zstd") == ("br", len(b"brotli bytes"))
    assert get("gzip;q=1.0, deflate") == ("gzip", len(gzip.compress(body)))
    assert get("identity") == (None, len(body))
    # "br" inside another coding's name is not brotli
    assert get("xbr")[0] is None
