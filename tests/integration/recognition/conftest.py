"""A small province for the recognition tests.

Hospitals: HA (tertiary, orders), HB (tertiary), HC (secondary), HP (primary). Resident R1
(registered at HA as ``HA-001``) had chest CTs at HB 10, 30 and 31 days ago (final
reports), at HB 2 days ago (preliminary report only), at HC 5 days ago and at HP 3 days
ago (final). Resident R2 has a chest CT at HB only: HA has no record of R2.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from tests.conftest import TEST_HTTP, TEST_SECURITY
from tests.factories import make_ct, to_bytes

from cloudfilm.config import RecognitionSettings, Settings
from cloudfilm.infrastructure.db.models import Report, Study
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput
from cloudfilm.services.identity.mpi import Registration

_RNG = random.Random(15)
NID1 = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M", rng=_RNG)
NID2 = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M", rng=_RNG)
NID_NOBODY = national_id.generate(area_code="330106", birth_date=date(1970, 5, 6), sex="F",
                                  rng=_RNG)
ZONE = ZoneInfo("Asia/Shanghai")
LEVELS = {"HA": "tertiary", "HB": "tertiary", "HC": "secondary", "HP": "primary"}


def days_ago(n: int) -> str:
    return f"{datetime.now(UTC).astimezone(ZONE).date() - timedelta(days=n):%Y%m%d}"


@dataclass
class Province:
    services: Services
    db_url: str
    tmp: Path
    ids: dict[str, int]
    studies: dict[str, str]  # key -> StudyInstanceUID

    def hospital(self, code: str) -> Actor:
        return Actor(kind="hospital", subject=code, hospital_id=self.ids[code],
                     hospital_code=code, display=f"Hospital {code}")

    def doctor(self, code: str, account: int = 1) -> Actor:
        return Actor(kind="doctor", subject=f"account:{account}", hospital_id=self.ids[code],
                     hospital_code=code, account_id=account, department="respiratory",
                     display="Dr")

    def ingest(self, code: str, nid: str, days: int, *, body: str = "CHEST",
               description: str = "胸部CT平扫", report: str | None = "final",
               modality: str = "CT") -> str:
        study = generate_uid()
        ds = make_ct(patient_id=nid, patient_name="Wang^XiaoDong", study_uid=study,
                     StudyDate=days_ago(days), StudyDescription=description,
                     BodyPartExamined=body, Modality=modality)
        path = self.tmp / f"{ds.SOPInstanceUID}.dcm"
        path.write_bytes(to_bytes(ds))
        [result] = self.services.ingest.ingest_files(
            [IngestItem(path)], sender=Sender(code, f"Hospital {code}", "test"))
        assert not isinstance(result, Exception), result
        if report is not None:
            self.report(study, code, report)
        return study

    def report(self, study_uid: str, code: str, status: str) -> None:
        engine = create_engine(self.db_url)
        now = datetime.now(UTC)
        try:
            with Session(engine) as session, session.begin():
                study = session.scalars(select(Study).where(
                    Study.study_instance_uid == study_uid)).one()
                session.add(Report(
                    public_id=secrets.token_hex(8), hospital_id=self.ids[code],
                    report_key=f"fhir:{secrets.token_hex(4)}", study_fk=study.id,
                    patient_fk=study.patient_fk, study_instance_uid=study_uid,
                    link_state="linked", status=status, current_version=1, version_count=1,
                    source="fhir", received_at=now, updated_at=now, listed_at=now,
                    findings="secret findings", impression="secret impression"))
        finally:
            engine.dispose()

    def sql(self, statement: Any) -> list[Any]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(statement))
        finally:
            engine.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    # Studies count as complete at once (the settle time has its own test).
    return Settings(data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
                    security=TEST_SECURITY, http=TEST_HTTP,
                    recognition=RecognitionSettings(settle_minutes=0))


@pytest.fixture
def province(services: Services, db_url: str, tmp_path: Path) -> Province:
    ids = {}
    for code, level in LEVELS.items():
        ids[code] = services.hospitals.register(HospitalInput(
            code=code, name=f"Hospital {code}", level=level, grade="A",
            national_id_source="patient_id")).id
    p = Province(services, db_url, tmp_path, ids, {})
    services.residents.register_patient("HA", Registration(
        patient_id="HA-001", national_id=NID1, name="Wang^XiaoDong", sex="M",
        birth_date="19600102"))
    for key, code, nid, days, report in (
            ("hb10", "HB", NID1, 10, "final"), ("hb30", "HB", NID1, 30, "final"),
            ("hb31", "HB", NID1, 31, "final"), ("hb2", "HB", NID1, 2, "preliminary"),
            ("hc5", "HC", NID1, 5, "final"), ("hp3", "HP", NID1, 3, "final"),
            ("r2", "HB", NID2, 4, "final")):
        p.studies[key] = p.ingest(code, nid, days, report=report)
    return p
