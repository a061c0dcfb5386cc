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
