"""Identity: hospital registry, credentials, residents and the MPI, on both databases."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import create_engine, text
from tests.conftest import shared_file
from tests.factories import make_ct, multipart, to_bytes

from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import (
    AlreadyExistsError,
    IdentityConflictError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from cloudfilm.services.identity.mpi import Registration

ADMIN = {"Authorization": "Bearer test-admin-token"}
RNG = random.Random(4)
NID = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M", rng=RNG)


def _register(services: Services, code: str, source: str = "patient_id", **extra: Any) -> None:
    services.hospitals.register(HospitalInput(code=code, name=f"Hospital {code}",
                                              level="tertiary", grade="A", city="Hangzhou",
                                              national_id_source=source, **extra))


def _ingest(services: Services, tmp_path: Any, code: str, ds: Dataset) -> None:
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    [result] = services.ingest.ingest_files([IngestItem(path)],
                                            sender=Sender(code, f"Hospital {code}", "test"))
    assert not isinstance(result, Exception), result


def _with_other_id(nid: str, **attrs: Any) -> Dataset:
    ds = make_ct(**attrs)
    item = Dataset()
    item.PatientID = nid
    item.IssuerOfPatientID = "CN-RID"
    ds.OtherPatientIDsSequence = [item]
    return ds


def test_two_hospitals_one_resident(services: Services, tmp_path: Any, db_url: str) -> None:
    _register(services, "HA", "patient_id")
    _register(services, "HB", "other_patient_ids", national_id_issuer="CN-RID")
    _ingest(services, tmp_path, "HA", make_ct(patient_id=NID, patient_name="Wang^XiaoDong"))
    _ingest(services, tmp_path, "HB", _with_other_id(NID, patient_id="MZ-889",
                                                      patient_name="王小东"))
    view = services.residents.xref(hospital_code="HB", patient_id="MZ-889")
    assert {(lk.hospital_code, lk.patient_id, lk.state) for lk in view.links} == {
        ("HA", NID, "linked"), ("HB", "MZ-889", "linked")}
    assert view.national_id_masked == NID[:6] + "********" + NID[-4:]
    assert view.national_id is None
    assert (view.birth_date, view.sex) == ("19600102", "M")
    assert services.residents.xref(national_id=NID).id == view.id
    assert services.residents.get(view.id, reveal=True).national_id == NID
    # Never in clear in the database.
    engine = create_engine(db_url)
    with engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(text("SELECT * FROM resident")))
    engine.dispose()
    assert NID not in dump


def test_pinyin_search_and_real_gb18030_names(services: Services, tmp_path: Any) -> None:
    _register(services, "HA", "tag", national_id_tag="00101000")
    for name in ("chrX1.dcm", "chrX2.dcm"):  # ISO_IR 192 and GB18030
        path = tmp_path / name
        path.write_bytes(shared_file(f"charsets/{name}").read_bytes())
        services.ingest.ingest_file(path, sender=Sender("HA", "Hospital HA", "test"))
    ds = make_ct(patient_id="L-1", patient_name="=王^小东", charset="GB18030",
                 OtherPatientIDs=NID)
    _ingest(services, tmp_path, "HA", ds)
    found = services.residents.search("wangxiaodong")
    assert [r.name for r in found] == ["=王^小东"]
    assert services.residents.search("王小东")[0].id == found[0].id
    assert services.residents.search("xiaodong")[0].id == found[0].id
    # QIDO matches the pinyin of an ideographic-only name too.
    unmatched = {r["patient_id"] for r in services.residents.unmatched()}
    assert {"X1EXAMPLE", "X2EXAMPLE"} <= unmatched


def test_conflicts_are_flagged_not_merged(services: Services, tmp_path: Any) -> None:
    _register(services, "HA")
    _register(services, "HB")
    _ingest(services, tmp_path, "HA", make_ct(patient_id=NID, patient_name="Wang^XiaoDong"))
    # Same national ID, another name at hospital B: flagged.
    _ingest(services, tmp_path, "HB", make_ct(patient_id=NID, patient_name="Li^Lei"))
    # Birth date in the header contradicts the national ID: flagged.
    other = national_id.generate(area_code="110101", birth_date=date(1990, 5, 6), sex="F",
                                 rng=RNG)
    _ingest(services, tmp_path, "HA", make_ct(patient_id=other, patient_name="Zhang^San",
                                              PatientSex="F"))
    conflicts = services.residents.conflicts()
    reasons = {(c["hospital_code"], c["patient_id"]): c["reason"] for c in conflicts}
    assert "PatientName differs" in reasons[("HB", NID)]
    assert "PatientBirthDate differs" in reasons[("HA", other)]
    resident = services.residents.xref(national_id=NID)
    assert [lk.hospital_code for lk in resident.links if lk.state == "linked"] == ["HA"]
    # An administrator resolves it explicitly; then undoes it.
    services.residents.link("HB", NID, resident.id)
    assert len([lk for lk in services.residents.get(resident.id).links
                if lk.state == "linked"]) == 2
    services.residents.unlink("HB", NID)
    with pytest.raises(NotFoundError):
        services.residents.xref(hospital_code="HB", patient_id=NID)
    actions = [e["action"] for e in services.residents.events(resident_id=resident.id)]
    assert {"link", "unlink", "link.conflict"} <= set(actions)
    # Explicit link changes are in the hash-chained audit trail too.
    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    audited = {e["action"] for e in services.audit.events(LOCAL_OPERATOR,
                                                          resident_id=resident.id)}
    assert {"identity.link", "identity.unlink"} <= audited
    # ... and so are reads of the index of people.
    services.residents.get(resident.id)
    audited = {e["action"] for e in services.audit.events(LOCAL_OPERATOR,
                                                          resident_id=resident.id)}
    assert {"identity.xref", "identity.read"} <= audited


def test_registration_feed_links_later_without_reupload(services: Services,
                                                        tmp_path: Any) -> None:
    _register(services, "HA", "none")
    _register(services, "HB", "none")
    _ingest(services, tmp_path, "HA", make_ct(patient_id="00123", patient_name="Wang^XiaoDong"))
    assert services.residents.unmatched()[0]["patient_id"] == "00123"
    first = services.residents.register_patient("HA", Registration(
        patient_id="00123", national_id=NID, name="Wang^XiaoDong", phone="13812345678",
        identifiers=(("passport", "E12345678", "CHN"),)))
    assert first.state == "linked" and first.changed
    again = services.residents.register_patient("HA", Registration(
        patient_id="00123", national_id=NID, name="Wang^XiaoDong"))
    assert (again.state, again.changed, again.resident_id) == ("linked", False,
                                                                first.resident_id)
    second = services.residents.register_patient("HB", Registration(
        patient_id="MZ-889", identifiers=(("passport", "E12345678", "CHN"),), name="王小东"))
    assert second.resident_id == first.resident_id
    view = services.residents.get(first.resident_id or 0)
    # Issue 11: the feed's phone is HA's record of its patient, not the resident's proven
    # phone (that is only an account's, proven by an SMS code).
    assert view.phone_masked == ""
    assert view.identifiers[0]["value"] == "E1*****78"
    assert [lk.studies for lk in view.links if lk.hospital_code == "HA"] == [1]
    # One local ID claimed for another resident: flagged, the first link is kept.
    nid2 = national_id.generate(area_code="330106", birth_date=date(1970, 3, 4), sex="M",
                                rng=RNG)
    claim = services.residents.register_patient("HA", Registration(
        patient_id="00123", national_id=nid2, name="Wang^XiaoDong"))
    assert claim.state == "conflict" and claim.resident_id == first.resident_id


@pytest.mark.parametrize("bad", [NID[:-1] + ("0" if NID[-1] != "0" else "1"), "12345",
                                 "330106" + "20991301" + "0011"])
def test_bad_national_ids_are_refused(services: Services, bad: str) -> None:
    _register(services, "HA", "none")
    with pytest.raises(InvalidInputError, match="national_id"):
        services.residents.register_patient("HA", Registration(patient_id="1", national_id=bad))


def test_merge_and_unmerge(services: Services) -> None:
    _register(services, "HA", "none")
    a = services.residents.register_patient("HA", Registration(
        patient_id="1", national_id=NID, name="Wang^XiaoDong"))
    b = services.residents.register_patient("HA", Registration(
        patient_id="2", identifiers=(("hk_macao_permit", "H1234567", ""),), name="Wang^XiaoDong"))
    assert a.resident_id != b.resident_id
    assert b.resident_id is not None and a.resident_id is not None
    services.residents.merge(b.resident_id, a.resident_id)
    assert len(services.residents.get(a.resident_id).links) == 2
    services.residents.unmerge(b.resident_id)
    assert len(services.residents.get(a.resident_id).links) == 1
    assert services.residents.get(b.resident_id).status == "active"
    services.residents.add_family_link(b.resident_id, a.resident_id, "guardian")
    with pytest.raises(AlreadyExistsError):
        services.residents.add_family_link(b.resident_id, a.resident_id, "guardian")
    nid2 = national_id.generate(area_code="330106", birth_date=date(1970, 3, 4), sex="M",
                                rng=RNG)
    # Issue 11: a record without a name links to nobody (a national ID alone is no proof).
    nameless = services.residents.register_patient("HA", Registration(patient_id="3",
                                                                      national_id=nid2))
    assert (nameless.state, nameless.resident_id) == ("unmatched", None)
    c = services.residents.register_patient("HA", Registration(patient_id="3", national_id=nid2,
                                                               name="Li^Lei"))
    with pytest.raises(IdentityConflictError):
        services.residents.merge(c.resident_id or 0, a.resident_id)


def test_hospital_registry_errors(services: Services) -> None:
    _register(services, "HA")
    with pytest.raises(AlreadyExistsError):
        _register(services, "HA")
    with pytest.raises(InvalidInputError, match="level"):
        services.hospitals.register(HospitalInput(code="HC", name="C", level="huge"))
    with pytest.raises(NotFoundError, match="unknown hospital code"):
        services.credentials.issue("NOPE")
    with pytest.raises(NotFoundError):
        services.hospitals.add_ae_title("NOPE", "AE1", "127.0.0.1", 104)
    peer = services.hospitals.add_ae_title("HA", "HA_PACS", "127.0.0.1", 104)
    assert services.hospitals.get("HA").ae_titles[0].ae_title == peer.ae_title


def test_stow_credentials_decide_the_hospital(services: Services, client: Any) -> None:
    for code in ("HA", "HB"):
        r = client.post("/api/v1/hospitals", headers=ADMIN, json={
            "code": code, "name": code, "level": "secondary", "grade": "A"})
        assert r.status_code == 201, r.text
    token_b = client.post("/api/v1/hospitals/HB/credentials", headers=ADMIN,
                          json={"label": "pacs"}).json()
    ds = make_ct(InstitutionName="Hospital HA")  # the header claims A: irrelevant
    body, ctype = multipart([to_bytes(ds)])
    stored = client.post("/dicomweb/studies", content=body, headers={
        "Content-Type": ctype, "Authorization": f"Bearer {token_b['token']}"})
    assert stored.status_code == 200, stored.text
    engine = create_engine(str(services.health._db.url))
    with engine.connect() as conn:
        code = conn.execute(text(
            "SELECT h.code FROM study s JOIN hospital h ON h.id = s.hospital_id "
            "WHERE s.study_instance_uid = :u"), {"u": ds.StudyInstanceUID}).scalar_one()
    engine.dispose()
    assert code == "HB"
    # The feed refuses a record claiming hospital A with B's credential.
    r = client.post("/api/v1/registrations", json={
        "hospital_code": "HA", "patient_id": "1", "national_id": NID},
        headers={"Authorization": f"Bearer {token_b['token']}"})
    assert r.status_code == 403
    # Unauthenticated STOW stays the local mode; a wrong or revoked credential is a 401.
    body2, _ = multipart([to_bytes(make_ct())])
    assert client.post("/dicomweb/studies", content=body2,
                       headers={"Content-Type": ctype}).status_code == 200
    client.post(f"/api/v1/credentials/{token_b['id']}/revoke", headers=ADMIN)
    for token in (token_b["token"], "cfh_wrong"):
        r = client.post("/dicomweb/studies", content=body2, headers={
            "Content-Type": ctype, "Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    with pytest.raises(NotAuthenticatedError):
        services.credentials.authenticate(token_b["token"])


def test_admin_api_and_xref(client: Any) -> None:
    # One authentication for every route (issue 11): the test client is a loopback caller
    # in open local mode (the operator), so prove the refusal with a token that is not valid.
    assert client.get("/api/v1/hospitals",
                      headers={"Authorization": "Bearer cfs_nope"}).status_code == 401
    assert client.get("/api/v1/hospitals",
                      headers={"Authorization": "Bearer wrong"}).status_code == 401
    client.post("/api/v1/hospitals", headers=ADMIN, json={
        "code": "HA", "name": "A", "level": "tertiary"})
    token = client.post("/api/v1/hospitals/HA/credentials", headers=ADMIN, json={}).json()
    feed = {"Authorization": f"Bearer {token['token']}"}
    r = client.post("/api/v1/registrations", headers=feed,
                    json={"patient_id": "00123", "national_id": NID, "name": "王小东"})
    assert r.status_code == 200 and r.json()["state"] == "linked", r.text
    bad = client.post("/api/v1/registrations", headers=feed,
                      json={"patient_id": "9", "national_id": NID[:-1] + "Y"})
    assert bad.status_code == 400 and "national_id" in bad.json()["message"]
    x = client.get("/api/v1/residents/xref", headers=ADMIN,
                   params={"hospital_code": "HA", "patient_id": "00123"}).json()
    assert x["national_id_masked"].startswith(NID[:6]) and "national_id" not in x
    assert client.get(f"/api/v1/residents/{x['id']}/fhir",
                      headers=ADMIN).json()["resourceType"] == "Patient"
    assert "/api/v1/residents/xref" in client.get("/openapi.json").json()["paths"]
    assert client.get("/api/v1/hospitals/NOPE", headers=ADMIN).status_code == 404
    # A hospital's credential is not an administrator's, and feeds only its own hospital.
    for method, path in (("GET", "/api/v1/hospitals"), ("GET", "/api/v1/residents/conflicts"),
                         ("GET", f"/api/v1/residents/{x['id']}"),
                         ("POST", "/api/v1/hospitals/HA/credentials")):
        assert client.request(method, path, headers=feed, json={}).status_code == 403, path
    r = client.post("/api/v1/registrations", headers=feed, json={
        "patient_id": "1", "national_id": NID, "name": "王小东", "hospital_code": "HB"})
    assert r.status_code == 403
