"""The policy through the doors: DICOMweb with hospital, session and admin credentials,
the local-mode rule, and DIMSE C-FIND/C-MOVE/C-GET from a hospital's registered AE."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from tests.factories import make_ct, multipart, to_bytes
from tests.integration.access.conftest import Province
from tests.integration.access.test_policy_matrix import audit_rows
from tests.integration.dimse.support import SCP_AE, free_port, running_server

from cloudfilm.interfaces.api.auth import authenticate
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.container import LocalAccess

ADMIN = {"Authorization": "Bearer test-admin-token"}
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
def http(province: Province) -> Iterator[TestClient]:
    with TestClient(create_app(province.services)) as client:
        yield client


def as_actor(client: TestClient, actor: Actor | None) -> None:
    if actor is None:
        client.app.dependency_overrides.pop(authenticate, None)  # type: ignore[attr-defined]
    else:
        client.app.dependency_overrides[authenticate] = lambda: actor  # type: ignore[attr-defined]


def qido_studies(client: TestClient, headers: dict[str, str] | None = None) -> set[str]:
    response = client.get("/dicomweb/studies", headers=headers or {})
    assert response.status_code == 200, response.text
    return {m["0020000D"]["Value"][0] for m in response.json()}


def test_hospital_credential_reads_its_own_studies_only(province: Province,
                                                        http: TestClient) -> None:
    p = province
    token = p.services.credentials.issue("HB").token
    hb = {"Authorization": f"Bearer {token}"}
    assert qido_studies(http, hb) == {p.sb1, p.sb2}
    series, sop = p.uids[p.sa1]
    for url in (f"/dicomweb/studies/{p.sa1}", f"/dicomweb/studies/{p.sa1}/metadata",
                f"/dicomweb/studies/{p.sa1}/series/{series}/instances/{sop}/rendered",
                f"/dicomweb/studies/{p.sa1}/series/{series}/instances/{sop}/frames/1",
                f"/wado?requestType=WADO&studyUID={p.sa1}&seriesUID={series}&objectUID={sop}"):
        response = http.get(url, headers={**hb, "Accept": "*/*"})
        assert response.status_code == 403, (url, response.status_code)
        row = audit_rows(p.db_url)[0]
        assert (row.actor_subject, row.outcome, row.reason) == ("HB", "denied", "other-hospital")
    response = http.get(f"/dicomweb/studies/{p.sb1}", headers={**hb, "Accept": ANY_TS})
    assert response.status_code == 200
    # the client address is kept only as a keyed hash
    engine_rows = audit_rows(p.db_url)
    assert engine_rows[0].outcome == "allowed"


def test_without_credentials_only_loopback_in_open_local_mode(province: Province,
                                                              http: TestClient) -> None:
    p = province
    # the test settings list "testclient" as a local client (tests/conftest.py)
    assert qido_studies(http) == {p.sa1, p.sb1, p.sb2}
    closed = replace(p.services, local_access=LocalAccess(open=False,
                                                          clients=frozenset({"testclient"})))
    with TestClient(create_app(closed)) as client:
        response = client.get("/dicomweb/studies")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert client.get("/dicomweb/studies", headers=ADMIN).status_code == 200
        assert client.get("/dicomweb/studies",
                          headers={"Authorization": "Bearer cfh_forged"}).status_code == 401
    # open local mode, but the client is not on the list (a LAN address)
    remote = replace(p.services, local_access=LocalAccess(open=True,
                                                          clients=frozenset({"127.0.0.1"})))
    with TestClient(create_app(remote)) as client:
        assert client.get("/dicomweb/studies").status_code == 401


def test_doctor_session_sees_granted_studies_and_resident_reads_who_looked(
        province: Province, http: TestClient) -> None:
    p = province
    as_actor(http, p.doctor)
    assert qido_studies(http) == {p.sa1}
    assert http.get(f"/dicomweb/studies/{p.sb1}/metadata").status_code == 403
    p.grant(p.doctor, p.r1)
    assert qido_studies(http) == {p.sa1, p.sb1}
    assert http.get(f"/dicomweb/studies/{p.sb1}/metadata").status_code == 200
    assert http.get(f"/dicomweb/studies/{p.sb2}/metadata").status_code == 403
    # doctors do not upload
    body, content_type = multipart([to_bytes(make_ct())])
    assert http.post("/dicomweb/studies", content=body,
                     headers={"Content-Type": content_type}).status_code == 403
    as_actor(http, p.resident(p.r1))
    log = http.get("/api/v1/me/access-log").json()
    mine = [e for e in log if e["who"] == "Dr 1"]
    assert {e["outcome"] for e in mine} == {"allowed", "denied"}
    assert {e["hospital"] for e in mine} == {"Hospital HA"}
    assert all(e["resource_uid"] != p.sb2 for e in log)  # R2's record is not R1's business
    assert http.get("/api/v1/audit").status_code == 403


def test_admin_reads_the_trail_and_its_fhir_export(province: Province, http: TestClient) -> None:
    p = province
    as_actor(http, p.doctor)
    http.get(f"/dicomweb/studies/{p.sb1}/metadata")
    as_actor(http, None)
    events = http.get("/api/v1/audit", params={"outcome": "denied"}, headers=ADMIN).json()
    assert events[0]["actor_subject"] == p.doctor.subject
    assert events[0]["resource_uid"] == p.sb1 and events[0]["resident_id"] == p.r1
    bundle = http.get("/api/v1/audit/fhir", params={"resident_id": p.r1},
                      headers=ADMIN).json()
    assert bundle["resourceType"] == "Bundle"
    event = next(e["resource"] for e in bundle["entry"]
                 if e["resource"]["subtype"][0]["code"] == "metadata")
    assert event["resourceType"] == "AuditEvent"
    assert event["outcome"] == "4" and event["type"]["code"] == "110103"
    assert {"reference": f"Patient/{p.r1}"} in [e["what"] for e in event["entity"]]
    assert audit_rows(p.db_url)[0].action == "audit.read"


# -- DIMSE ---------------------------------------------------------------------------------


def _query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def _assoc(port: int, *contexts: Any, **kw: Any) -> Any:
    ae = AE(ae_title="HB_PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for cx in contexts:
        ae.add_requested_context(cx)
    return ae


def test_dimse_peer_of_hospital_b_cannot_find_move_or_get_hospital_a(
        province: Province) -> None:
    p = province
    p.services.peers.register("HB_PACS", "127.0.0.1", 104, hospital_code="HB")
    received: list[str] = []
    dest = AE(ae_title="HB_DEST")
    dest.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    dest.add_supported_context(Verification)
    dest_port = free_port()
    dest_server = dest.start_server(("127.0.0.1", dest_port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda e: received.append(str(e.request.AffectedSOPInstanceUID))
         or 0)])
    p.services.peers.register("HB_DEST", "127.0.0.1", dest_port, hospital_code="HB")
    try:
        with running_server(p.services) as server:
            ae = _assoc(server.port)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate("127.0.0.1", server.port, ae_title=SCP_AE)
            assert assoc.is_established
            found = [ident.StudyInstanceUID for status, ident in assoc.send_c_find(
                _query("STUDY", StudyInstanceUID=""), StudyRootQueryRetrieveInformationModelFind)
                if status.Status == 0xFF00]
            assert set(found) == {p.sb1, p.sb2}
            refused = list(assoc.send_c_move(_query("STUDY", StudyInstanceUID=p.sa1), "HB_DEST",
                                             StudyRootQueryRetrieveInformationModelMove))
            assert refused[-1][0].Status == 0x0124
            row = audit_rows(p.db_url)[0]
            assert (row.actor_subject, row.outcome, row.reason, row.resource_uid) == (
                "HB", "denied", "other-hospital", p.sa1)
            moved = list(assoc.send_c_move(_query("STUDY", StudyInstanceUID=p.sb1), "HB_DEST",
                                           StudyRootQueryRetrieveInformationModelMove))
            assert moved[-1][0].Status == 0x0000
            assoc.release()

            get_ae = _assoc(server.port, StudyRootQueryRetrieveInformationModelGet)
            get_ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
            got: list[Any] = []
            gassoc = get_ae.associate(
                "127.0.0.1", server.port, ae_title=SCP_AE,
                ext_neg=[build_role(CTImageStorage, scp_role=True)],
                evt_handlers=[(evt.EVT_C_STORE, lambda e: got.append(e) or 0)])
            final = list(gassoc.send_c_get(_query("STUDY", StudyInstanceUID=p.sa1),
                                           StudyRootQueryRetrieveInformationModelGet))[-1][0]
            gassoc.release()
            assert final.Status == 0x0124 and not got
            assert audit_rows(p.db_url)[0].outcome == "denied"
    finally:
        dest_server.shutdown()
    assert received == [p.uids[p.sb1][1]]
