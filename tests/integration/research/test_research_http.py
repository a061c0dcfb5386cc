"""The research door: the same rules over HTTP, and the export streamed to the client."""

from __future__ import annotations

import io
import zipfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pydicom

from cloudfilm.services.container import Services

from .test_research import NIDS, _hospital, _ingest, settings  # noqa: F401 - fixture

ADMIN = {"Authorization": "Bearer test-admin-token"}


def test_http_lifecycle(client: Any, services: Services, tmp_path: Path) -> None:
    _hospital(services)
    _ingest(services, tmp_path, NIDS[0], "Zhang^San0", "CHEST")
    body = {"title": "T", "principal_investigator": "PI", "institution": "I",
            "ethics_reference": "E-1",
            "ethics_expires": (date.today() + timedelta(days=9)).isoformat(),
            "options": {"retain_modified_dates": True},
            "cohort": {"body_parts": ["CHEST"]}}
    assert client.post("/api/v1/research/projects",
                       json={**body, "options": {"bogus": 1}}).status_code == 400
    created = client.post("/api/v1/research/projects", json=body)  # the local operator
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert [p["id"] for p in client.get("/api/v1/research/projects").json()] == [pid]
    assert client.get(f"/api/v1/research/projects/{pid}").json()["status"] == "proposed"
    assert client.get(f"/api/v1/research/projects/{pid}/counts").json()["studies"] == "< 3"
    assert client.get(f"/api/v1/research/projects/{pid}/export").status_code == 403
    bad = {"Authorization": "Bearer nope"}
    assert client.post(f"/api/v1/research/projects/{pid}/approve",
                       headers=bad).status_code == 401
    assert client.post(f"/api/v1/research/projects/{pid}/approve",
                       headers=ADMIN).status_code == 200
    assert client.get(f"/api/v1/research/projects/{pid}/counts",
                      headers=ADMIN).json()["studies"] == 1
    with client.stream("GET", f"/api/v1/research/projects/{pid}/export",
                       headers=ADMIN) as response:
        assert response.status_code == 200
        data = b"".join(response.iter_bytes())
    archive = zipfile.ZipFile(io.BytesIO(data))
    [name] = [n for n in archive.namelist() if n.endswith(".dcm")]
    ds = pydicom.dcmread(io.BytesIO(archive.read(name)))
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientID != NIDS[0]
    # A resident's refusal endpoint refuses anyone who is not a resident.
    assert client.put("/api/v1/research/refusal", json={"refused": True},
                      headers=ADMIN).status_code == 403
