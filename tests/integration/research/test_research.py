"""Research projects on both databases: k-threshold before approval, approval rules,
refusal honoured at export, a streamed export re-read with pydicom, the residents' log."""

from __future__ import annotations

import csv
import hashlib
import io
import random
import zipfile
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import create_engine, select
from tests.conftest import TEST_HTTP, TEST_SECURITY
from tests.factories import make_ct, to_bytes

from cloudfilm.config import ResearchSettings, Settings
from cloudfilm.infrastructure.db.models import AuditEvent, PatientLink, Resident
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from cloudfilm.services.identity.mpi import Registration
from cloudfilm.services.research.service import Cohort, ExportSummary, ProjectInput

ADMIN = Actor(kind="admin", subject="admin:1", display="commission admin")
ADMIN2 = Actor(kind="admin", subject="admin:2", display="second admin")
DOCTOR = Actor(kind="doctor", subject="account:7", account_id=7, display="Dr Researcher")
_RNG = random.Random(19)
NIDS = [national_id.generate(area_code="330106", birth_date=date(1950 + i, 3, 4), sex="F",
                             rng=_RNG) for i in range(4)]


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
                    security=TEST_SECURITY, http=TEST_HTTP,
                    research=ResearchSettings(k_threshold=3))


def _ingest(services: Services, tmp: Path, nid: str, name: str, body: str) -> str:
    ds = make_ct(patient_id=nid, patient_name=name, StudyDate="20240105", BodyPartExamined=body,
                 InstitutionName="Hangzhou First People's Hospital",
                 ReferringPhysicianName="Li^Si", PatientSex="F",
                 PatientBirthDate=f"{1950 + NIDS.index(nid)}0304")
    path = tmp / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    [result] = services.ingest.ingest_files([IngestItem(path)],
                                            sender=Sender("HZ1", "Hospital HZ1", "test"))
    assert not isinstance(result, Exception), result
    return str(ds.SOPInstanceUID)


def _resident_of(db_url: str, nid_index: int) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            ids = sorted({r[0] for r in conn.execute(
                select(PatientLink.resident_id).where(PatientLink.state == "linked"))})
            return int(ids[nid_index])
    finally:
        engine.dispose()


def _hospital(services: Services) -> None:
    services.hospitals.register(HospitalInput(code="HZ1", name="Hospital HZ1",
                                              level="tertiary", grade="A",
                                              national_id_source="patient_id"))
    for i, nid in enumerate(NIDS):
        services.residents.register_patient("HZ1", Registration(
            patient_id=f"REG-{i}", national_id=nid, name=f"Zhang^San{i}", sex="F",
            birth_date=f"{1950 + i}0304"))


def _project(services: Services, **cohort: object) -> str:
    return services.research.propose(DOCTOR, ProjectInput(
        title="Lung nodules", principal_investigator="Prof Zhao", institution="ZJU",
        ethics_reference="IRB-2026-19", ethics_expires=date.today() + timedelta(days=30),
        options={"retain_modified_dates": True, "clean_descriptors": True},
        cohort=Cohort(**cohort))).id  # type: ignore[arg-type]


def test_counts_k_threshold_approval_refusal_and_streamed_export(
        services: Services, db_url: str, tmp_path: Path) -> None:
    _hospital(services)
    originals = {}
    for i, nid in enumerate(NIDS):
        for _ in range(2 if i == 0 else 1):
            uid = _ingest(services, tmp_path, nid, f"Zhang^San{i}", "CHEST")
            originals[uid] = nid
    _ingest(services, tmp_path, NIDS[0], "Zhang^San0", "HEAD")  # outside the cohort
    chest = _project(services, body_parts=("CHEST",))
    nobody = _project(services, body_parts=("CHEST",), modalities=("MR",))

    # Before approval: counts only, small ones hidden (k = 3 here).
    counts = services.research.counts(DOCTOR, chest)
    assert counts.studies == 5 and counts.patients == 4 and counts.instances == 5
    assert services.research.counts(DOCTOR, nobody).studies == "< 3"
    with pytest.raises(NotAuthorizedError):
        services.research.export(ADMIN, chest)  # not approved
    with pytest.raises(NotAuthorizedError):
        services.research.approve(DOCTOR, chest)  # a doctor cannot approve
    resident = Actor(kind="resident", subject="account:99",
                     resident_ids=frozenset({_resident_of(db_url, 1)}))
    with pytest.raises(NotAuthorizedError):
        services.research.approve(resident, chest)
    with pytest.raises(NotAuthorizedError):
        services.research.export(resident, chest)
    services.research.approve(ADMIN, chest)
    assert services.research.counts(DOCTOR, nobody).studies == "< 3"  # still not approved

    # A resident refuses; another cannot refuse for them.
    with pytest.raises(NotAuthorizedError):
        services.research.set_refusal(replace(resident, resident_ids=frozenset({10**9})), True,
                                      _resident_of(db_url, 1))
    services.research.set_refusal(resident, True)
    assert services.research.refusal(resident) is True

    summary = ExportSummary()
    stream = services.research.export(ADMIN2, chest, summary)
    chunks = list(stream)
    assert len(chunks) > 5  # streamed entry by entry, not one blob
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    names = archive.namelist()
    dicoms = [n for n in names if n.endswith(".dcm")]
    assert len(dicoms) == 4 and summary.refused == 1 and summary.exported == 4
    manifest = archive.read("manifest.csv")
    assert hashlib.sha256(manifest).hexdigest() == summary.manifest_sha256
    assert archive.read("manifest.sha256").decode().startswith(summary.manifest_sha256)
    rows = list(csv.DictReader(io.StringIO(manifest.decode())))
    pseudo_ids = set()
    for name in dicoms:
        raw = archive.read(name)
        ds = pydicom.dcmread(io.BytesIO(raw))
        assert ds.SOPInstanceUID not in originals
        pseudo_ids.add(ds.PatientID)
        text = raw.decode("latin-1")
        births = [f"{1950 + i}0304" for i in range(4)]
        for secret in (*NIDS, *births, "Zhang", "Li^Si", "Hangzhou", "20240105"):
            assert secret not in text, (secret, name)
        assert any(r["file"] == name and r["sha256"] == hashlib.sha256(raw).hexdigest()
                   for r in rows)
    assert len(pseudo_ids) == 3  # four residents less the one who refused

    # The same project again: same pseudonyms; the residents' log names the project.
    again = zipfile.ZipFile(io.BytesIO(b"".join(services.research.export(ADMIN2, chest))))
    assert sorted(again.namelist()) == sorted(names)
    # Resumed after the second object: only the rest, with its own manifest.
    second_uid = dicoms[1].rsplit("/", 1)[1].removesuffix(".dcm")
    rest = zipfile.ZipFile(io.BytesIO(b"".join(services.research.export(
        ADMIN2, chest, resume_after=second_uid))))
    assert [n for n in rest.namelist() if n.endswith(".dcm")] == dicoms[2:]
    with pytest.raises(InvalidInputError):
        services.research.export(ADMIN2, chest, resume_after=next(iter(originals)))
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            events = list(conn.execute(select(AuditEvent.resident_id, AuditEvent.actor_display,
                                              AuditEvent.detail)
                                       .where(AuditEvent.action == "research.export")))
            refused_flag = conn.execute(select(Resident.research_refused).where(
                Resident.id == _resident_of(db_url, 1))).scalar_one()
    finally:
        engine.dispose()
    assert refused_flag is True
    assert len(events) == 10 and all("Lung nodules" in e[1] for e in events)
    assert _resident_of(db_url, 1) not in {e[0] for e in events}
    for pid in pseudo_ids:
        assert all(pid not in str(e[2]) for e in events)  # never the pseudonym
    owner = Actor(kind="resident", subject="account:98",
                  resident_ids=frozenset({events[0][0]}))
    log = services.audit.access_log(owner)
    assert any("Lung nodules" in entry.who for entry in log)


def test_projects_unlinkable_across(services: Services, tmp_path: Path) -> None:
    _hospital(services)
    _ingest(services, tmp_path, NIDS[0], "Zhang^San0", "CHEST")
    ids = []
    for _ in range(2):
        project = _project(services, body_parts=("CHEST",))
        services.research.approve(ADMIN, project)
        archive = zipfile.ZipFile(io.BytesIO(b"".join(services.research.export(ADMIN,
                                                                              project))))
        [name] = [n for n in archive.namelist() if n.endswith(".dcm")]
        ids.append(pydicom.dcmread(io.BytesIO(archive.read(name))).PatientID)
    assert ids[0] != ids[1]



def test_attacks_on_the_rules(services: Services, db_url: str, tmp_path: Path) -> None:
    _hospital(services)
    _ingest(services, tmp_path, NIDS[0], "Zhang^San0", "CHEST")
    ds = make_ct(patient_id=NIDS[2], patient_name="Zhang^San2", StudyDate="20240105",
                 BodyPartExamined="CHEST", Modality="US", PatientSex="F",
                 PatientBirthDate="19520304")
    path = tmp_path / "us.dcm"
    path.write_bytes(to_bytes(ds))
    services.ingest.ingest_files([IngestItem(path)], sender=Sender("HZ1", "Hospital HZ1", "t"))
    # An administrator cannot approve their own proposal.
    own = services.research.propose(ADMIN, ProjectInput(
        title="Own", principal_investigator="PI", institution="I", ethics_reference="E",
        ethics_expires=date.today() + timedelta(days=3)))
    with pytest.raises(NotAuthorizedError):
        services.research.approve(ADMIN, own.id)
    # Expired ethics approval: approved, but nothing leaves.
    expired = services.research.propose(DOCTOR, ProjectInput(
        title="Old", principal_investigator="PI", institution="I", ethics_reference="E",
        ethics_expires=date.today() - timedelta(days=1)))
    services.research.approve(ADMIN, expired.id)
    with pytest.raises(NotAuthorizedError):
        services.research.export(ADMIN, expired.id)
    # A doctor may count but not export; unknown options are refused up front.
    chest = _project(services, body_parts=("CHEST",))
    services.research.approve(ADMIN, chest)
    with pytest.raises(NotAuthorizedError):
        services.research.export(DOCTOR, chest)
    with pytest.raises(InvalidInputError):
        services.research.propose(DOCTOR, ProjectInput(
            title="X", principal_investigator="PI", institution="I", ethics_reference="E",
            ethics_expires=date.today() + timedelta(days=3), options={"keep_names": True}))
    # The ultrasound (burned-in text likely) is excluded and the manifest says why.
    summary = ExportSummary()
    archive = zipfile.ZipFile(io.BytesIO(b"".join(
        services.research.export(ADMIN, chest, summary))))
    assert summary.exported == 1 and summary.excluded == 1
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [r["burned_in"] for r in rows if not r["file"]] == ["excluded"]
    assert "US" in next(r["reason"] for r in rows if not r["file"])
