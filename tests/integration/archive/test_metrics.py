"""/metrics after real traffic: ingest by door (objects, bytes, latency), DIMSE
associations, storage, the reconciliation queue, jobs and audit, with DICOMweb and REST
routes labelled apart and no UID or hospital code in any label."""

from __future__ import annotations

import io
import re
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from rich.console import Console
from tests.factories import make_ct, multipart, to_bytes
from tests.integration.dimse.support import SCP_AE, SCU_AE, running_server

from cloudfilm.cli.importer import run_import
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.container import Services

ADMIN = {"Authorization": "Bearer test-admin-token"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_traffic_through_every_door(services: Services, tmp_path: Path) -> None:
    services.peers.register(SCU_AE, "127.0.0.1", 104, hospital_code="H-DIMSE")
    assert services.figures is not None
    services.figures.ttl = 0  # read the index at every scrape (15 s in production)
    with TestClient(create_app(services)) as http:
        before = _samples(http.get("/metrics", headers=ADMIN).text)
        # STOW-RS: two stored, one held (no PatientID)
        stored = [make_ct(instance_number=i) for i in range(2)]
        body, ctype = multipart([to_bytes(d) for d in [*stored, make_ct(patient_id="")]])
        assert http.post("/dicomweb/studies", content=body,
                         headers={"Content-Type": ctype}).status_code == 202
        # the same from the edge gateway's User-Agent: a door of its own (all duplicates)
        assert http.post("/dicomweb/studies", content=body, headers={
            "Content-Type": ctype, "User-Agent": "cloudfilm-gateway/1"}).status_code == 202
        # C-STORE: one stored; and a rejected association
        with running_server(services) as scp:
            ae = AE(ae_title=SCU_AE)
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", scp.port, ae_title=SCP_AE)
            assert assoc.is_established
            active = _samples(http.get("/metrics", headers=ADMIN).text)
            assert _value(active, "cloudfilm_dimse_associations_active") >= 1
            assert assoc.send_c_store(make_ct()).Status == 0
            assoc.release()
            intruder = AE(ae_title="INTRUDER")
            intruder.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            assert not intruder.associate("127.0.0.1", scp.port, ae_title=SCP_AE).is_established
        # import: one file
        path = tmp_path / "one.dcm"
        path.write_bytes(to_bytes(make_ct()))
        run_import(services, [path], console=Console(file=io.StringIO()))
        # a REST route
        assert http.get("/api/v1/reconciliation", headers=ADMIN).status_code == 200
        text = http.get("/metrics", headers=ADMIN).text
    after = _samples(text)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("cloudfilm_ingest_objects_total", door="stow-rs", outcome="stored") == 2
    assert grew("cloudfilm_ingest_objects_total", door="stow-rs", outcome="held") == 1
    assert grew("cloudfilm_ingest_objects_total", door="gateway", outcome="duplicate") == 2
    assert grew("cloudfilm_ingest_objects_total", door="c-store", outcome="stored") == 1
    assert grew("cloudfilm_ingest_objects_total", door="import", outcome="stored") == 1
    assert grew("cloudfilm_ingest_bytes_total", door="stow-rs") > 3 * 2000
    assert grew("cloudfilm_ingest_seconds_count", door="c-store") == 1
    assert grew("cloudfilm_ingest_seconds_count", door="stow-rs") == 1
    assert grew("cloudfilm_dimse_associations_total") >= 1
    assert grew("cloudfilm_dimse_associations_rejected_total") >= 1
    assert _value(after, "cloudfilm_storage_objects") == 4
    assert _value(after, "cloudfilm_storage_studies") == 4  # make_ct: a study each
    assert _value(after, "cloudfilm_storage_bytes") > 4 * 2000
    assert _value(after, "cloudfilm_ingest_held_objects", reason="no-patient-id",
                  state="open") == 1
    assert _value(after, "cloudfilm_audit_chain_records") >= 1
    assert grew("cloudfilm_audit_records_appended_total", outcome="success") >= 1
    # DICOMweb and REST apart
    assert grew("cloudfilm_http_requests_total", api="dicomweb", route="/dicomweb/studies",
                method="POST", status="202") == 2
    assert grew("cloudfilm_http_requests_total", api="rest", route="/api/v1/reconciliation",
                method="GET", status="200") == 1
    # bounded labels: no UID and no hospital code anywhere in the exposition
    labels = " ".join(re.findall(r"\{[^}]*\}", text))
    assert not re.search(r"\d+\.\d+\.\d+\.\d+\.\d+", labels)
    assert "H-DIMSE" not in labels and "LOCAL" not in labels
