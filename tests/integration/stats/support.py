"""Index rows written straight into the tables (no pixels): what the dashboard counts."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select

from cloudfilm.infrastructure.db.models import (
    Hospital,
    Patient,
    Report,
    Series,
    StatsAlert,
    StatsHospital,
    StatsPairDay,
    StatsReportDay,
    StatsReportMonth,
    StatsStudyDay,
    StatsStudyMonth,
    StatsUseDay,
    StatsWatermark,
    Study,
)
from cloudfilm.infrastructure.db.session import Database

_n = itertools.count(1)


def hospital(db: Database, code: str, *, city: str = "杭州", county: str = "西湖区",
             level: str = "tertiary", public: bool = True,
             created: datetime | None = None) -> int:
    with db.writing() as conn:
        found = conn.execute(select(Hospital.id).where(Hospital.code == code)).scalar()
        if found is not None:
            return int(found)
        result = conn.execute(insert(Hospital).values(
            code=code, name=f"{code} 医院", created_at=created or datetime(2026, 1, 1, tzinfo=UTC),
            level=level, grade="A", city=city, county=county, active=True, public=public))
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def study(db: Database, hospital_id: int, *, exam_at: datetime | None, received_at: datetime,
          modality: str = "CT", instances: int = 10, size: int = 5_000_000,
          report_at: datetime | None = None, accession: str = "",
          updated_at: datetime | None = None) -> str:
    n = next(_n)
    uid = f"1.2.826.0.1.3680043.10.1017.{n}"
    with db.writing() as conn:
        patient = conn.execute(insert(Patient).values(
            hospital_id=hospital_id, patient_id=f"P{n}", issuer_of_patient_id="",
            patient_name="", name_search="", birth_date="", sex="",
            updated_at=received_at)).inserted_primary_key[0]  # type: ignore[index]
        study_id = conn.execute(insert(Study).values(
            study_instance_uid=uid, patient_fk=patient, hospital_id=hospital_id,
            accession_number=accession or f"A{n}", num_series=1, num_instances=instances,
            size_bytes=size, received_at=received_at, exam_at=exam_at,
            updated_at=updated_at or received_at, attributes_json="{}")
        ).inserted_primary_key[0]  # type: ignore[index]
        conn.execute(insert(Series).values(
            series_instance_uid=f"{uid}.1", study_fk=study_id, modality=modality,
            num_instances=instances, received_at=received_at, updated_at=received_at,
            attributes_json="{}"))
        if report_at is not None:
            conn.execute(insert(Report).values(
                public_id=f"r{n}", hospital_id=hospital_id, report_key=f"k{n}",
                study_fk=study_id, patient_fk=patient, study_instance_uid=uid,
                link_state="linked", status="final", current_version=1, version_count=1,
                source="fhir", exam_at=exam_at, received_at=report_at, updated_at=report_at,
                listed_at=exam_at or report_at, search_text=""))
    return uid


def clear(db: Database) -> None:
    with db.writing() as conn:
        for table in (Report, Series, Study, Patient, StatsStudyDay, StatsReportDay,
                      StatsStudyMonth, StatsReportMonth, StatsUseDay, StatsPairDay,
                      StatsHospital, StatsWatermark, StatsAlert):
            conn.execute(delete(table))


def clear_rollup(db: Database) -> None:
    """Empty the rollup tables, keeping the live rows."""
    with db.writing() as conn:
        for table in (StatsStudyDay, StatsReportDay, StatsStudyMonth, StatsReportMonth,
                      StatsUseDay, StatsPairDay):
            conn.execute(delete(table))


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with db.reading() as conn:
        for table in (StatsStudyDay, StatsReportDay, StatsStudyMonth, StatsReportMonth,
                      StatsUseDay, StatsPairDay):
            cols = [c for c in table.__table__.columns]
            out[table.__tablename__] = sorted(
                tuple(r) for r in conn.execute(select(*cols)))
    return out


PASSWORD = "dashboard-pass-1"


@dataclass
class World:
    hospitals: dict[str, int]
    late_uid: str
    other_late_uid: str
    tokens: dict[str, str]


def build_world(services: Any, now: datetime | None = None) -> World:
    """Two cities: Hangzhou (HZ1 late, HZ2 on time), Ningbo (NB1 on time), and QZ1 that
    never uploaded; a late study today and yesterday; accounts of every dashboard role."""
    from cloudfilm.services.access.accounts import NewAccount
    from cloudfilm.services.access.actor import LOCAL_OPERATOR
    from cloudfilm.services.errors import AlreadyExistsError

    db = services.health._db
    now = now or datetime.now(UTC)
    old = now - timedelta(days=60)
    ids = {"HZ1": hospital(db, "HZ1", city="杭州", county="西湖区", created=old),
           "HZ2": hospital(db, "HZ2", city="杭州", county="上城区", level="secondary",
                           created=old),
           "NB1": hospital(db, "NB1", city="宁波", county="海曙区", created=old),
           "QZ1": hospital(db, "QZ1", city="衢州", county="柯城区", public=False,
                           created=old)}
    late_uid = ""
    for d in range(1, 6):
        exam = now - timedelta(days=d, hours=2)
        for i in range(4):
            uid = study(db, ids["HZ1"], exam_at=exam, received_at=exam + timedelta(hours=30),
                        modality="CT", accession=f"HZ1-{d}-{i}")
            late_uid = late_uid or uid
            study(db, ids["HZ2"], exam_at=exam, received_at=exam + timedelta(hours=1),
                  modality="DX", report_at=exam + timedelta(hours=3))
        other = study(db, ids["NB1"], exam_at=exam, received_at=exam + timedelta(hours=14),
                      modality="MR", accession=f"NB1-{d}")
    services.stats.rollup.run(now=now)
    tokens = {}
    for username, kind, code, area in (("commission", "admin", None, ""),
                                       ("hz-bureau", "bureau", None, "杭州"),
                                       ("hz1-admin", "hospital_admin", "HZ1", ""),
                                       ("hz1-doctor", "doctor", "HZ1", "")):
        with contextlib.suppress(AlreadyExistsError):  # a second world, same database
            services.accounts.create_account(NewAccount(
                kind=kind, username=username, password=PASSWORD, display_name=username,
                hospital_code=code, area=area), by=LOCAL_OPERATOR)
        tokens[username] = services.accounts.sign_in_password(
            username, PASSWORD, requester="test").token
    return World(ids, late_uid, other, tokens)
