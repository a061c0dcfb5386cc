"""The single decision and the search filter are one rule (``services.access.rules``): for
random actors of every kind and random grants (all records, named studies, expired,
revoked, still requested), every study and report the SQL filter lets through is exactly
what the per-object decision allows. Both databases; a fixed world of three hospitals,
three residents and records that are linked, in conflict, unlinked or unmatched."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    AccessGrant,
    Account,
    Hospital,
    Patient,
    PatientLink,
    Report,
    Resident,
    Study,
)
from cloudfilm.services.access.policy import AccessPolicy, Resource
from cloudfilm.services.kernel.actor import Actor, Permission, Role

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
HOSPITALS = ("HA", "HB", "HC")
RESIDENTS = (1, 2, 3)
# (resident, link state) per patient record at every hospital: None resident = unmatched
RECORDS = ((1, "linked"), (2, "linked"), (3, "linked"), (None, "conflict"),
           (2, "conflict"), (3, "unlinked"), (None, None))


@dataclass
class World:
    engine: Engine
    hospital_ids: dict[str, int]
    studies: dict[str, int | None]  # uid -> resident it belongs to (for grants)
    reports: list[tuple[int, str | None]]  # number, linked study
    doctors: dict[str, int]  # hospital code -> doctor account id


@pytest.fixture
def world(db_url: str) -> Any:
    engine = create_engine(db_url)
    with Session(engine) as s, s.begin():
        ids: dict[str, int] = {}
        for code in HOSPITALS:
            h = Hospital(code=code, name=code, created_at=NOW)
            s.add(h)
            s.flush()
            ids[code] = h.id
        for rid in RESIDENTS:
            s.add(Resident(id=rid, created_at=NOW, updated_at=NOW))
        s.flush()
        studies: dict[str, int | None] = {}
        reports: list[tuple[int, str | None]] = []
        n = itertools.count(1)
        for code in HOSPITALS:
            for k, (rid, state) in enumerate(RECORDS):
                p = Patient(hospital_id=ids[code], patient_id=f"P{k}", updated_at=NOW)
                s.add(p)
                s.flush()
                if state is not None:
                    s.add(PatientLink(patient_fk=p.id, state=state, updated_at=NOW,
                                      resident_id=rid if state != "unlinked" else None,
                                      candidate_resident_id=rid if state == "conflict"
                                      else None))
                uid = f"1.2.3.{HOSPITALS.index(code) + 1}.{k}"
                st_row = Study(study_instance_uid=uid, patient_fk=p.id, hospital_id=ids[code],
                               received_at=NOW, updated_at=NOW)
                s.add(st_row)
                s.flush()
                studies[uid] = rid
                for linked in (True, False):  # a report of the study, a held one
                    i = next(n)
                    s.add(Report(
                        public_id=f"R{i}", hospital_id=ids[code], report_key=f"k{i}",
                        study_fk=st_row.id if linked else None, patient_fk=p.id,
                        study_instance_uid=uid if linked else f"9.9.{i}",
                        link_state="linked" if linked else "held", status="final",
                        current_version=1, version_count=1, source="fhir",
                        received_at=NOW, updated_at=NOW, listed_at=NOW))
                    reports.append((i, uid if linked else None))
        # a held report whose patient record is unknown
        s.add(Report(public_id="R0", hospital_id=ids["HC"], report_key="k0", patient_fk=None,
                     study_instance_uid="9.9.0", link_state="held", status="final",
                     current_version=1, version_count=1, source="fhir", received_at=NOW,
                     updated_at=NOW, listed_at=NOW))
        doctors = {}
        for code in ("HA", "HB"):
            a = Account(kind="doctor", username=f"doc-{code}", display_name="Dr",
                        hospital_id=ids[code], department="r", created_at=NOW)
            s.add(a)
            s.flush()
            doctors[code] = a.id
    yield World(engine, ids, studies, reports, doctors)
    engine.dispose()


GRANT = st.tuples(
    st.sampled_from(RESIDENTS),
    st.one_of(st.none(), st.lists(st.sampled_from(
        [f"1.2.3.{h}.{k}" for h in (1, 2, 3) for k in range(len(RECORDS))] + ["7.7.7"]),
        max_size=4)),
    st.sampled_from(["active", "expired", "revoked", "requested"]),
)

ACTOR = st.tuples(
    st.sampled_from(["operator", "admin", "hospital", "hospital-by-code", "doctor",
                     "hospital-admin", "doctor+admin", "resident", "stranger"]),
    st.sampled_from(HOSPITALS),
    st.frozensets(st.sampled_from(RESIDENTS), max_size=3),
)


def _actor(w: World, spec: tuple[str, str, frozenset[int]]) -> Actor:
    kind, code, residents = spec
    hid = w.hospital_ids[code]
    if kind == "hospital":
        return Actor(kind="hospital", subject=code, hospital_id=hid, hospital_code=code)
    if kind == "hospital-by-code":  # a DIMSE peer known by its code only
        return Actor(kind="hospital", subject=code, hospital_code=code)
    if kind in ("doctor", "doctor+admin", "hospital-admin"):
        doctor_code = code if code in w.doctors else "HA"
        roles = {"doctor": {Role.DOCTOR}, "doctor+admin": {Role.DOCTOR, Role.HOSPITAL_ADMIN},
                 "hospital-admin": {Role.HOSPITAL_ADMIN}}[kind]
        return Actor(kind="doctor", subject="account:d", account_id=w.doctors[doctor_code],
                     hospital_id=w.hospital_ids[doctor_code], hospital_code=doctor_code,
                     roles=frozenset(roles))
    if kind == "resident":
        return Actor(kind="resident", subject="account:r", resident_ids=residents)
    if kind == "stranger":
        return Actor(kind="researcher", subject="x")  # type: ignore[arg-type]
    return Actor(kind=kind, subject=kind)  # type: ignore[arg-type]


def _add_grants(conn: Any, w: World, actor: Actor, grants: list[Any]) -> None:
    if actor.account_id is None:
        return
    rows = []
    for resident, uids, status in grants:
        rows.append({
            "doctor_account_id": actor.account_id, "hospital_id": actor.hospital_id,
            "resident_id": resident, "scope_all": uids is None,
            "study_uids": orjson.dumps(uids or []).decode(), "purpose": "t", "mode": "sms",
            "status": "requested" if status == "requested" else "active", "hours": 24,
            "requested_at": NOW - timedelta(hours=30), "decided_at": NOW,
            "expires_at": NOW - timedelta(hours=1) if status == "expired"
            else NOW + timedelta(hours=1),
            "revoked_at": NOW if status == "revoked" else None})
    if rows:
        conn.execute(insert(AccessGrant), rows)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(spec=ACTOR, grants=st.lists(GRANT, max_size=4))
def test_decision_and_filter_agree(world: World, spec: Any, grants: list[Any]) -> None:
    w = world
    actor = _actor(w, spec)
    policy = AccessPolicy(clock=lambda: NOW)
    with w.engine.connect() as conn:
        outer = conn.begin()
        try:
            _add_grants(conn, w, actor, grants)
            where = policy.filter(conn, actor)
            stmt = select(Study.study_instance_uid)
            listed = set(conn.execute(stmt.where(where) if where is not None else stmt)
                         .scalars())
            decided = {uid for uid in w.studies
                       if policy.decide(conn, actor, Permission.READ_STUDY,
                                        Resource.of(uid)).allowed}
            assert listed == decided, (actor, grants)

            where = policy.report_filter(conn, actor)
            stmt = select(Report.public_id, Report.study_fk, Report.hospital_id,
                          Report.patient_fk, Report.study_instance_uid)
            all_reports = conn.execute(stmt).all()
            listed = set(conn.execute(select(Report.public_id).where(where)
                                      if where is not None else select(Report.public_id))
                         .scalars())
            codes = {v: k for k, v in w.hospital_ids.items()}
            decided = set()
            for r in all_reports:
                if r.study_fk is not None:
                    d = policy.decide(conn, actor, Permission.READ_REPORT,
                                      Resource.of(r.study_instance_uid))
                else:
                    d = policy.authorize_held_report(
                        conn, actor, hospital_id=r.hospital_id,
                        hospital_code=codes[r.hospital_id], patient_fk=r.patient_fk)
                if d.allowed:
                    decided.add(r.public_id)
            assert listed == decided, (actor, grants)
        finally:
            outer.rollback()


def test_the_property_can_fail(world: World) -> None:
    """A filter that forgets a rule is caught: drop the named-study grants from the SQL."""
    w = world
    actor = _actor(w, ("doctor", "HA", frozenset()))
    policy = AccessPolicy(clock=lambda: NOW)
    with w.engine.connect() as conn:
        outer = conn.begin()
        try:
            _add_grants(conn, w, actor, [(2, ["1.2.3.2.1"], "active")])
            broken = AccessPolicy(clock=lambda: NOW, scopes=lambda *a, **k: {})
            where = broken.filter(conn, actor)
            assert where is not None
            listed = set(conn.execute(select(Study.study_instance_uid).where(where))
                         .scalars())
            decided = {uid for uid in w.studies if policy.decide(
                conn, actor, Permission.READ_STUDY, Resource.of(uid)).allowed}
            assert decided - listed == {"1.2.3.2.1"}
        finally:
            outer.rollback()
