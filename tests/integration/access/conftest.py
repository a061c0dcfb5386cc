"""A small province for the access tests: hospitals HA and HB, residents R1 and R2, one
study each (HA: R1; HB: R1 and R2), doctors at HA, and a helper that inserts grants rows
the way the consent service does (through the ORM, so the real ``active_scopes`` reads them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from tests.factories import make_ct, to_bytes

from cloudfilm.infrastructure.db.models import AccessGrant, Account
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services
from cloudfilm.services.identity import national_id
from cloudfilm.services.identity.hospitals import HospitalInput

_RNG = random.Random(5)
NID1 = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M", rng=_RNG)
NID2 = national_id.generate(area_code="330106", birth_date=date(1960, 1, 2), sex="M", rng=_RNG)


@dataclass
class Province:
    services: Services
    db_url: str
    ha: int
    hb: int
    r1: int
    r2: int
    sa1: str  # HA's study of R1
    sb1: str  # HB's study of R1
    sb2: str  # HB's study of R2
    uids: dict[str, tuple[str, str]]  # study -> (series, sop)
    doctor: Actor  # at HA, account 1
    other_doctor: Actor  # at HA, account 2

    def hospital(self, code: str) -> Actor:
        hid = self.ha if code == "HA" else self.hb
        return Actor(kind="hospital", subject=code, hospital_id=hid, hospital_code=code,
                     display=f"Hospital {code}")

    def resident(self, rid: int) -> Actor:
        return Actor(kind="resident", subject=f"account:r{rid}", resident_ids=frozenset({rid}),
                     display="resident")

    def grant(self, doctor: Actor, resident: int, *, uids: list[str] | None = None,
              hours: int = 24, status: str = "active", revoked: bool = False,
              expired: bool = False) -> int:
        now = datetime.now(UTC)
        expires = now - timedelta(hours=1) if expired else now + timedelta(hours=hours)
        engine = create_engine(self.db_url)
        try:
            with Session(engine) as session, session.begin():
                row = AccessGrant(
                    doctor_account_id=doctor.account_id, hospital_id=doctor.hospital_id,
                    resident_id=resident, scope_all=uids is None,
                    study_uids=orjson.dumps(uids or []).decode(), purpose="test",
                    mode="sms", status=status, hours=hours, requested_at=now,
                    decided_at=now, expires_at=expires,
                    revoked_at=now if revoked else None)
                session.add(row)
                session.flush()
                return int(row.id)
        finally:
            engine.dispose()


def _ingest(services: Services, folder: Path, code: str, nid: str,
            name: str) -> tuple[str, str, str]:
    study, series = generate_uid(), generate_uid()
    ds = make_ct(patient_id=nid, patient_name=name, study_uid=study, series_uid=series)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    [result] = services.ingest.ingest_files([IngestItem(path)],
                                            sender=Sender(code, f"Hospital {code}", "test"))
    assert not isinstance(result, Exception), result
    return study, series, str(ds.SOPInstanceUID)


def _account(db_url: str, **values: Any) -> int:
    engine = create_engine(db_url)
    try:
        with Session(engine) as session, session.begin():
            row = Account(created_at=datetime.now(UTC), **values)
            session.add(row)
            session.flush()
            return int(row.id)
    finally:
        engine.dispose()


@pytest.fixture
def province(services: Services, db_url: str, tmp_path: Path) -> Province:
    ids = {}
    for code in ("HA", "HB"):
        view = services.hospitals.register(HospitalInput(
            code=code, name=f"Hospital {code}", level="tertiary", grade="A",
            national_id_source="patient_id"))
        ids[code] = view.id
    uids: dict[str, tuple[str, str]] = {}
    made = {}
    for key, code, nid, name in (("sa1", "HA", NID1, "Wang^XiaoDong"),
                                 ("sb1", "HB", NID1, "Wang^XiaoDong"),
                                 ("sb2", "HB", NID2, "Zhao^Lei")):
        study, series, sop = _ingest(services, tmp_path, code, nid, name)
        made[key] = study
        uids[study] = (series, sop)
    r1 = services.residents.xref(national_id=NID1).id
    r2 = services.residents.xref(national_id=NID2).id
    doctors = []
    for n in (1, 2):
        aid = _account(db_url, kind="doctor", username=f"doc{n}", display_name=f"Dr {n}",
                       hospital_id=ids["HA"], department="radiology")
        doctors.append(Actor(kind="doctor", subject=f"account:{aid}", hospital_id=ids["HA"],
                             hospital_code="HA", account_id=aid, department="radiology",
                             display=f"Dr {n}"))
    return Province(services, db_url, ids["HA"], ids["HB"], r1, r2, made["sa1"], made["sb1"],
                    made["sb2"], uids, doctors[0], doctors[1])
