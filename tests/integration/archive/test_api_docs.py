"""``/docs`` loads nothing from a CDN; DICOMweb is described in the OpenAPI (issue 12)."""

from __future__ import annotations

import re
from typing import Any


def test_docs_page_uses_only_local_assets(client: Any) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
    for url in urls:
        assert url.startswith("/"), f"{url} is not served by us"
        assert not url.startswith("//")
        assert client.get(url).status_code == 200, url
    assert "cdn" not in page.text.lower()
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN


def test_dicomweb_routes_are_in_the_openapi(client: Any) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path, method in [("/dicomweb/studies", "get"), ("/dicomweb/studies", "post"),
                         ("/dicomweb/studies/{study}/series/{series}/metadata", "get"),
                         ("/dicomweb/studies/{study}/series/{series}/instances/{instance}"
                          "/frames/{frames}", "get")]:
        assert method in paths[path], (path, method)
        assert "DICOMweb" in paths[path][method]["tags"]
    # The unprefixed duplicates stay out of the schema.
    assert "/studies" not in paths
