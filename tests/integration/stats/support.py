"""Index rows written straight into the tables (no pixels): what the dashboard counts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
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
    StatsStudyDay,
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
                      StatsUseDay, StatsPairDay, StatsHospital, StatsWatermark, StatsAlert):
            conn.execute(delete(table))


def snapshot(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with db.reading() as conn:
        for table in (StatsStudyDay, StatsReportDay, StatsUseDay, StatsPairDay):
            cols = [c for c in table.__table__.columns]
            out[table.__tablename__] = sorted(
                tuple(r) for r in conn.execute(select(*cols)))
    return out
