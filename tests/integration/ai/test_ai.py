"""AI assistance on both databases: the four-eyes approval, workitems only for enabled
hospitals, matching studies and residents who did not refuse; the sample plug-in run by
the job system's entry point; results stored as an AI-marked SR series of the study, not
as a report, readable under the study's policy; every read by an algorithm audited naming
the resident; UPS-RS over HTTP with attempts to get around the rules."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from bench.synth import make_ct_series
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from tests.conftest import TEST_HTTP, TEST_SECURITY
from tests.factories import make_ct, to_bytes

from cloudfilm.app import build_services
from cloudfilm.config import AiSettings, Settings
from cloudfilm.infrastructure.db.models import AuditEvent, PatientLink, Report, Series
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.ai.registry import AlgorithmInput
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from cloudfilm.services.identity.mpi import Registration

ADMIN = Actor(kind="admin", subject="admin:1", display="commission admin")
ADMIN2 = Actor(kind="admin", subject="admin:2", display="second admin")
_RNG = random.Random(22)
NIDS = [national_id.generate(area_code="330106", birth_date=date(1950 + i, 3, 4), sex="F",
                             rng=_RNG) for i in range(3)]
NODULES = [(-70.0, -20.0, -40.0, 12.0), (95.0, -20.0, -70.0, 8.0)]
UPS = {"content-type": "application/dicom+json"}


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
                    security=TEST_SECURITY, http=TEST_HTTP, ai=AiSettings(settle_seconds=0))


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    _hospitals(built)
    yield built
    built.health._db.dispose()


def _hospitals(services: Services) -> None:
    for code in ("HZ1", "HZ2"):
        services.hospitals.register(HospitalInput(code=code, name=f"Hospital {code}",
                                                  level="tertiary", grade="A",
                                                  national_id_source="patient_id"))
    for i, nid in enumerate(NIDS):
        services.residents.register_patient("HZ1", Registration(
            patient_id=f"REG-{i}", national_id=nid, name=f"Zhang^San{i}", sex="F",
            birth_date=f"{1950 + i}0304"))


def _ingest(services: Services, tmp: Path, datasets: list, hospital: str = "HZ1") -> str:
    items = []
    for ds in datasets:
        path = tmp / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        items.append(IngestItem(path))
    results = services.ingest.ingest_files(items, sender=Sender(hospital, hospital, "test"))
    assert not any(isinstance(r, Exception) for r in results), results
    return str(datasets[0].StudyInstanceUID)


def _chest(nid: str, nodules: list, seed: int = 0) -> list:
    return list(make_ct_series(40, patient_id=nid, patient_name=_name(nid), sex="F",
                               birth_date=f"{1950 + NIDS.index(nid)}0304", size=128,
                               slice_thickness=2.5, t_range=(0.05, 0.4), nodules=nodules,
                               seed=seed))


def _name(nid: str) -> str:
    return f"Zhang^San{NIDS.index(nid)}"


def _ct(nid: str, study_uid: str, number: int) -> object:
    """A small CT of the registered resident ``nid`` (so that it is linked at ingest)."""
    return make_ct(patient_id=nid, patient_name=_name(nid), PatientSex="F",
                   PatientBirthDate=f"{1950 + NIDS.index(nid)}0304", instance_number=number,
                   study_uid=study_uid)


def _residents(db_url: str) -> list[int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return sorted({r[0] for r in conn.execute(
                select(PatientLink.resident_id).where(PatientLink.state == "linked"))})
    finally:
        engine.dispose()


def _query(db_url: str, stmt: object) -> list:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(stmt))  # type: ignore[call-overload]
    finally:
        engine.dispose()


def _nodule_algorithm(services: Services) -> str:
    assert services.ai is not None
    reg = services.ai.registry
    view, token = reg.register(ADMIN, AlgorithmInput(
        name="lung-nodules", version="0.1", kind="plugin", plugin="builtin:lung-nodules",
        intended_use="Demonstration: lung nodule candidates on chest CT. Not a device.",
        vendor="cloudfilm demo", modalities=("CT",), body_parts=("CHEST",)))
    assert token == "" and view.status == "registered"
    with pytest.raises(NotAuthorizedError):
        reg.approve(ADMIN, view.id)  # four eyes
    reg.approve(ADMIN2, view.id)
    return view.id


def test_plugin_runs_on_new_studies_of_enabled_hospitals_only(
        services: Services, db_url: str, tmp_path: Path) -> None:
    assert services.ai is not None
    reg, work = services.ai.registry, services.ai.work
    algo = _nodule_algorithm(services)
    with pytest.raises(NotAuthorizedError):  # a doctor cannot enable for a hospital
        reg.enable(Actor(kind="doctor", subject="account:5", account_id=5,
                         hospital_code="HZ1"), algo, "HZ1")
    hz1_admin = Actor(kind="doctor", subject="account:6", account_id=6, hospital_code="HZ1",
                      roles=frozenset({"doctor", "hospital_admin"}))  # type: ignore[arg-type]
    with pytest.raises(NotAuthorizedError):  # nor another hospital's administrator
        reg.enable(hz1_admin, algo, "HZ2")
    assert reg.enable(hz1_admin, algo, "HZ1").hospitals == ["HZ1"]
    work.forget_cache()

    study = _ingest(services, tmp_path, _chest(NIDS[0], NODULES))
    other = _ingest(services, tmp_path, [make_ct(patient_id="X1",
                                                  study_uid="1.2.826.0.1.3680043.8.498.22",
                                                  instance_number=i, BodyPartExamined="CHEST")
                                          for i in range(1, 4)], hospital="HZ2")
    head = _ingest(services, tmp_path, [make_ct(patient_id="H1", BodyPartExamined="HEAD",
                                                instance_number=i,
                                                study_uid="1.2.826.0.1.3680043.8.498.23")
                                        for i in range(1, 4)])
    # The resident of NIDS[1] refuses research/AI use before the study arrives.
    refuser = _ingest(services, tmp_path, _chest(NIDS[1], NODULES, seed=1))
    refusing = _resident_of_study(db_url, refuser)
    services.research.set_refusal(Actor(kind="resident", subject="account:9",
                                        resident_ids=frozenset({refusing})), True)

    states = work.run_pending()
    assert states == {"COMPLETED": 1}, states
    listed = work.search(ADMIN)
    assert [(w.study_instance_uid, w.state) for w in listed] == [(study, "COMPLETED")]
    assert other not in [w.study_instance_uid for w in listed]  # HZ2 did not enable it
    assert head not in [w.study_instance_uid for w in listed]  # a head CT does not match
    assert refuser not in [w.study_instance_uid for w in listed]  # refused
    # A second run makes nothing new (one workitem per algorithm and study).
    assert work.run_pending() == {}

    doctor = Actor(kind="doctor", subject="account:5", account_id=5, hospital_code="HZ1")
    results = work.results(doctor, study)
    # An SR (TID 1500) and a SEG (one segment per nodule), each a new series of the study.
    assert sorted(r.sop_class_uid for r in results) == [
        "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"]
    [result] = [r for r in results if r.sop_class_uid.endswith(".88.34")]
    [seg] = [r for r in results if r.sop_class_uid.endswith(".66.4")]
    assert result.ai_generated and result.algorithm == "lung-nodules"
    segs = _query(db_url, select(Series.modality, Series.series_description)
                  .where(Series.series_instance_uid == seg.series_instance_uid))
    assert segs[0][0] == "SEG" and "AI-GENERATED" in segs[0][1]
    assert sorted(round(f["diameter_mm"]) for f in result.findings) == [8, 12]
    # Stored as a new series of the study, never as a doctor's report.
    series = _query(db_url, select(Series.modality, Series.series_description)
                    .where(Series.series_instance_uid == result.series_instance_uid))
    assert series[0][0] == "SR" and "AI" in series[0][1]
    assert _query(db_url, select(func.count()).select_from(Report))[0][0] == 0
    # Results follow the study's policy: another hospital's doctor sees nothing.
    stranger = Actor(kind="doctor", subject="account:8", account_id=8, hospital_code="HZ2")
    with pytest.raises(NotAuthorizedError):
        work.results(stranger, study)
    with pytest.raises(NotAuthorizedError):
        work.review(stranger, result.sop_instance_uid, True)
    assert work.review(doctor, result.sop_instance_uid, True) == "confirmed"
    # The algorithm's read is in the audit trail, naming the resident, as the algorithm.
    reads = _query(db_url, select(AuditEvent.actor_kind, AuditEvent.actor_display,
                                  AuditEvent.resident_id, AuditEvent.outcome,
                                  AuditEvent.resource_uid)
                   .where(AuditEvent.action == "ai.read"))
    assert reads == [("algorithm", "AI algorithm «lung-nodules» 0.1",
                      _resident_of_study(db_url, study), "allowed", study)]
    # The algorithm no longer reads the study: its workitem is completed.
    from cloudfilm.services.ai.registry import actor_of

    with services.health._db.read() as s:
        from cloudfilm.infrastructure.db import ai_repository

        row = ai_repository.algorithm(s, algo)
        assert row is not None
        algo_actor = actor_of(row)
    with pytest.raises(NotAuthorizedError):
        services.retrieve.locate(study, actor=algo_actor)


def _resident_of_study(db_url: str, study_uid: str) -> int:
    from cloudfilm.infrastructure.db.models import Study

    rows = _query(db_url, select(PatientLink.resident_id)
                  .join(Study, Study.patient_fk == PatientLink.patient_fk)
                  .where(Study.study_instance_uid == study_uid,
                         PatientLink.state == "linked"))
    return int(rows[0][0])


def _external(client: TestClient, name: str, *, approve: bool = True,
              modalities: tuple[str, ...] = ("CT",)) -> tuple[str, dict[str, str]]:
    made = client.post("/api/v1/ai/algorithms", json={
        "name": name, "version": "2.0", "kind": "external", "vendor": "Vendor",
        "intended_use": "CT triage (test)", "modalities": list(modalities)})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["credential"].startswith("cfa_")
    if approve:
        # The local operator registered it; an administrator's token approves it.
        ok = client.post(f"/api/v1/ai/algorithms/{body['id']}/approve",
                         headers={"Authorization": "Bearer test-admin-token"})
        assert ok.status_code == 200, ok.text
        ok = client.post(f"/api/v1/ai/algorithms/{body['id']}/hospitals",
                         json={"hospital": "HZ1"})
        assert ok.status_code == 200, ok.text
    return body["id"], {"Authorization": f"Bearer {body['credential']}"}


def _state(state: str, transaction: str) -> str:
    return json.dumps([{"00741000": {"vr": "CS", "Value": [state]},
                        "00081195": {"vr": "UI", "Value": [transaction]}}])


def test_ups_rs_lifecycle_and_attempts_to_get_around_it(
        services: Services, db_url: str, tmp_path: Path) -> None:
    assert services.ai is not None
    with TestClient(create_app(services)) as client:
        engine_id, engine = _external(client, "triage")
        other_id, other = _external(client, "rival")
        _, unapproved = _external(client, "unapproved", approve=False)
        services.ai.work.forget_cache()
        study = _ingest(services, tmp_path, [_ct(NIDS[2], "1.2.826.0.1.3680043.8.498.31", i)
                                             for i in range(1, 4)])
        outside = _ingest(services, tmp_path, [make_ct(patient_id="Z9", instance_number=1,
                                                       study_uid="1.2.826.0.1.3680043.8.498.32")])
        services.ai.work.schedule_due()

        found = client.get("/dicomweb/workitems", headers=engine,
                           params={"ProcedureStepState": "SCHEDULED"})
        assert found.status_code == 200, found.text
        items = [w for w in found.json() if w["0020000D"]["Value"][0] == study]
        assert len(items) == 1
        item = items[0]
        uid = item["00080018"]["Value"][0]
        assert item["00741202"]["Value"] == [engine_id]
        assert "Value" not in item["00100010"] and "Value" not in item["00100020"]
        assert "00081195" not in item
        # The unapproved engine sees no work and cannot claim this one.
        assert client.get("/dicomweb/workitems", headers=unapproved).status_code == 204
        assert client.put(f"/dicomweb/workitems/{uid}/state", headers=unapproved | UPS,
                          content=_state("IN PROGRESS", "1.2.3.4")).status_code == 403
        # Nobody reads the study before claiming it.
        meta = f"/dicomweb/studies/{study}/metadata"
        assert client.get(meta, headers=engine).status_code == 403
        # Another approved engine cannot claim someone else's work item.
        assert client.put(f"/dicomweb/workitems/{uid}/state", headers=other | UPS,
                          content=_state("IN PROGRESS", "1.2.3.5")).status_code == 403
        assert client.get(f"/dicomweb/workitems/{uid}", headers=other).status_code == 403

        tx = "1.2.826.0.1.3680043.8.498.99"
        ok = client.put(f"/dicomweb/workitems/{uid}/state", headers=engine | UPS,
                        content=_state("IN PROGRESS", tx))
        assert ok.status_code == 200, ok.text
        again = client.put(f"/dicomweb/workitems/{uid}/state", headers=engine | UPS,
                           content=_state("IN PROGRESS", tx))
        assert again.status_code == 409
        got = client.get(f"/dicomweb/workitems/{uid}", headers=engine).json()[0]
        assert got["00741000"]["Value"] == ["IN PROGRESS"] and "00081195" not in got

        assert client.get(meta, headers=engine).status_code == 200
        assert client.get(meta, headers=other).status_code == 403
        assert client.get(f"/dicomweb/studies/{outside}/metadata",
                          headers=engine).status_code == 403  # outside its workitems
        qido = client.get("/dicomweb/studies", headers=engine)
        assert [s["0020000D"]["Value"][0] for s in qido.json()] == [study]
        # Reports stay closed to algorithms (images only).
        assert client.get(f"/api/v1/studies/{study}/reports",
                          headers=engine).status_code == 403

        first = client.get(meta, headers=engine).json()[0]["00080018"]["Value"][0]
        finding = {"label": "nodule", "centre_mm": [0, 0, 1], "diameter_mm": 7.5,
                   "score": 0.8, "sop_instance_uid": first, "row": 10, "column": 12}
        wrong = client.post(f"/api/v1/ai/workitems/{uid}/findings", headers=engine,
                            json={"transaction_uid": "1.2.9", "findings": [finding]})
        assert wrong.status_code == 409
        stored = client.post(f"/api/v1/ai/workitems/{uid}/findings", headers=engine,
                             json={"transaction_uid": tx, "findings": [finding]})
        assert stored.status_code == 201, stored.text
        assert client.put(f"/dicomweb/workitems/{uid}/state", headers=engine | UPS,
                          content=_state("COMPLETED", "1.2.9")).status_code == 409
        assert client.put(f"/dicomweb/workitems/{uid}/state", headers=other | UPS,
                          content=_state("COMPLETED", tx)).status_code == 403
        done = client.put(f"/dicomweb/workitems/{uid}/state", headers=engine | UPS,
                          content=_state("COMPLETED", tx))
        assert done.status_code == 200
        assert client.get(meta, headers=engine).status_code == 403  # finished: closed again
        results = client.get(f"/api/v1/ai/studies/{study}/results")
        assert results.status_code == 200
        assert [r["findings"][0]["diameter_mm"] for r in results.json()] == [7.5]
        assert results.json()[0]["ai_generated"] is True

        # The rival's own workitem: cancelled by an administrator while scheduled.
        [rival] = [w for w in services.ai.work.search(ADMIN)
                   if w.algorithm_id == other_id and w.study_instance_uid == study]
        assert client.post(f"/dicomweb/workitems/{rival.uid}/cancelrequest",
                           headers=engine).status_code == 403
        assert client.post(f"/dicomweb/workitems/{rival.uid}/cancelrequest"
                           ).status_code == 202
        assert services.ai.work.get(ADMIN, rival.uid).state == "CANCELED"
        # Created by hand (UPS-RS create) for the same study, its first workitem completed:
        # a re-run (its results will be a new version); a second one while that re-run
        # is still scheduled is refused.
        body = json.dumps([{"00741202": {"vr": "LO", "Value": [engine_id]},
                            "0020000D": {"vr": "UI", "Value": [study]}}])
        assert client.post("/dicomweb/workitems", headers=UPS,
                           content=body).status_code == 201
        dup = client.post("/dicomweb/workitems", headers=UPS, content=body)
        assert dup.status_code == 400

    denied = _query(db_url, select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "ai.workitem", AuditEvent.outcome == "denied"))
    assert denied[0][0] >= 3


def test_refusal_after_scheduling_cancels_the_claim(
        services: Services, db_url: str, tmp_path: Path) -> None:
    assert services.ai is not None
    work = services.ai.work
    with TestClient(create_app(services)) as client:
        _, engine = _external(client, "triage")
        work.forget_cache()
        study = _ingest(services, tmp_path, [_ct(NIDS[0], "1.2.826.0.1.3680043.8.498.41", i)
                                             for i in range(1, 3)])
        work.schedule_due()
        [item] = client.get("/dicomweb/workitems", headers=engine).json()
        uid = item["00080018"]["Value"][0]
        rid = _resident_of_study(db_url, study)
        services.research.set_refusal(Actor(kind="resident", subject="account:3",
                                            resident_ids=frozenset({rid})), True)
        claim = client.put(f"/dicomweb/workitems/{uid}/state", headers=engine | UPS,
                           content=_state("IN PROGRESS", "1.2.3.77"))
        assert claim.status_code == 403
        assert work.get(ADMIN, uid).state == "CANCELED"
        assert client.get(f"/dicomweb/studies/{study}/metadata",
                          headers=engine).status_code == 403


def test_registration_rules(services: Services) -> None:
    assert services.ai is not None
    reg = services.ai.registry
    doctor = Actor(kind="doctor", subject="account:5", account_id=5, hospital_code="HZ1")
    data = AlgorithmInput(name="x", version="1", intended_use="test", kind="plugin",
                          plugin="os:system")
    with pytest.raises(NotAuthorizedError):
        reg.register(doctor, data)
    with pytest.raises(InvalidInputError):  # not builtin, entry point or configured
        reg.register(ADMIN, data)
    view, _ = reg.register(ADMIN, AlgorithmInput(name="x", version="1", intended_use="t",
                                                 kind="plugin",
                                                 plugin="builtin:lung-nodules"))
    with pytest.raises(InvalidInputError):  # enable before approval
        reg.enable(ADMIN, view.id, "HZ1")
