"""Algorithms approved for de-identified input (both databases): the plug-in and the
external engine get Annex E de-identified copies under the algorithm's own key, never the
originals (WADO-RS refuses them); their findings are mapped back to the original images;
the read is audited naming the resident."""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import TEST_HTTP, TEST_SECURITY

from cloudfilm.app import build_services
from cloudfilm.config import AiSettings, Settings
from cloudfilm.infrastructure.db.models import AuditEvent
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.ai.registry import AlgorithmInput
from cloudfilm.services.container import Services

from .test_ai import (
    ADMIN2,
    NIDS,
    NODULES,
    UPS,
    _chest,
    _hospitals,
    _ingest,
    _query,
    _resident_of_study,
    _state,
)

# The module the platform loads the configured plug-in from (by its dotted name).
spy = importlib.import_module("tests.integration.ai.spy")


@pytest.fixture
def services(db_url: str, tmp_path: Path) -> Iterator[Services]:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
                        security=TEST_SECURITY, http=TEST_HTTP,
                        ai=AiSettings(settle_seconds=0,
                                      plugins={"spy": "tests.integration.ai.spy:detect"}))
    built = build_services(settings)
    _hospitals(built)
    yield built
    built.health._db.dispose()


def _parts(response: object) -> list[bytes]:
    ctype = response.headers["content-type"]  # type: ignore[attr-defined]
    boundary = ctype.split("boundary=")[1].strip('"')
    out = []
    for chunk in response.content.split(b"--" + boundary.encode())[1:]:  # type: ignore[attr-defined]
        if chunk.startswith(b"--"):
            break
        out.append(chunk.partition(b"\r\n\r\n")[2].removesuffix(b"\r\n"))
    return out


def test_plugin_sees_only_deidentified_images(services: Services, db_url: str,
                                              tmp_path: Path) -> None:
    assert services.ai is not None
    reg = services.ai.registry
    view, _ = reg.register(LOCAL_OPERATOR, AlgorithmInput(
        name="spy", version="1", kind="plugin", plugin="spy", intended_use="test",
        modalities=("CT",), input="deidentified"))
    assert view.input == "deidentified"
    reg.approve(ADMIN2, view.id)
    reg.enable(LOCAL_OPERATOR, view.id, "HZ1")
    series = _chest(NIDS[0], NODULES)
    study = _ingest(services, tmp_path, series)
    spy.SEEN.clear()
    assert services.ai.work.run_pending() == {"COMPLETED": 1}
    assert len(spy.SEEN) == len(series)
    originals = {str(ds.SOPInstanceUID) for ds in series}
    for seen in spy.SEEN:
        assert str(seen.PatientID) != NIDS[0] and "Zhang" not in str(seen.PatientName)
        assert str(seen.StudyInstanceUID) != study
        assert str(seen.SOPInstanceUID) not in originals
    results = services.ai.work.results(LOCAL_OPERATOR, study)
    [sr] = [r for r in results if r.sop_class_uid.endswith(".88.34")]
    assert sorted(round(f["diameter_mm"]) for f in sr.findings) == [8, 12]
    assert {f["sop_instance_uid"] for f in sr.findings} <= originals  # mapped back
    reads = _query(db_url, select(AuditEvent.action, AuditEvent.resident_id,
                                  AuditEvent.actor_kind)
                   .where(AuditEvent.action.like("ai.read%")))
    assert reads == [("ai.read.deidentified", _resident_of_study(db_url, study),
                      "algorithm")]


def test_external_engine_gets_deidentified_copies_only(services: Services,
                                                       tmp_path: Path) -> None:
    assert services.ai is not None
    with TestClient(create_app(services)) as client:
        made = client.post("/api/v1/ai/algorithms", json={
            "name": "deid-engine", "version": "1", "kind": "external",
            "intended_use": "test", "modalities": ["CT"], "input": "deidentified"}).json()
        client.post(f"/api/v1/ai/algorithms/{made['id']}/approve",
                    headers={"Authorization": "Bearer test-admin-token"})
        client.post(f"/api/v1/ai/algorithms/{made['id']}/hospitals", json={"hospital": "HZ1"})
        engine = {"Authorization": f"Bearer {made['credential']}"}
        services.ai.work.forget_cache()
        series = _chest(NIDS[0], NODULES)
        study = _ingest(services, tmp_path, series)
        services.ai.work.schedule_due()
        [item] = client.get("/dicomweb/workitems", headers=engine).json()
        uid = item["00080018"]["Value"][0]
        tx = "1.2.826.0.1.3680043.8.498.777"
        assert client.put(f"/dicomweb/workitems/{uid}/state", headers=engine | UPS,
                          content=_state("IN PROGRESS", tx)).status_code == 200
        # Never the originals, even while holding the workitem.
        assert client.get(f"/dicomweb/studies/{study}/metadata",
                          headers=engine).status_code == 403
        assert client.get(f"/api/v1/ai/workitems/{uid}/instances",
                          params={"transaction_uid": "1.2.3"}, headers=engine
                          ).status_code == 409
        got = client.get(f"/api/v1/ai/workitems/{uid}/instances",
                         params={"transaction_uid": tx}, headers=engine)
        assert got.status_code == 200
        copies = [pydicom.dcmread(io.BytesIO(p)) for p in _parts(got)]
        assert len(copies) == len(series)
        assert all(str(c.PatientID) != NIDS[0] for c in copies)
        from cloudfilm.infrastructure.ai.nodules import detect

        findings = detect(copies)
        sent = client.post(f"/api/v1/ai/workitems/{uid}/findings", headers=engine, json={
            "transaction_uid": tx, "findings": [{
                "label": f.label, "centre_mm": list(f.centre_mm),
                "diameter_mm": f.diameter_mm, "score": f.score,
                "sop_instance_uid": f.sop_instance_uid, "row": f.row, "column": f.column}
                for f in findings]})
        assert sent.status_code == 201, sent.text
        originals = {str(ds.SOPInstanceUID) for ds in series}
        assert {f["sop_instance_uid"] for f in sent.json()["findings"]} <= originals
