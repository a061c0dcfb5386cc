"""What the demo province adds for the commission's dashboard (issue 17): a hospital that
registered a month ago and never uploaded (silent), cross-hospital reads by a doctor under
an in-person grant and a break-glass grant, the commission's and a health bureau's
accounts, then a rollup. Late hospitals come from the province itself: its history is
uploaded today, long after the exams, and some recent exams are late.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from cloudfilm.demo.province import Province
from cloudfilm.infrastructure.db.models import Hospital
from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.access.consent import GrantRequest, InPersonEvidence
from cloudfilm.services.errors import AlreadyExistsError, CloudfilmError
from cloudfilm.services.identity.hospitals import HospitalInput

SILENT = HospitalInput(code="ZJ-QZ-001", name="衢州示范人民医院", level="secondary", grade="A",
                       city="衢州", county="柯城区", public=True)
PASSWORD = "cloudfilm-demo-2026"
# user name, kind, display name, hospital, area
ACCOUNTS = (
    ("commission", "admin", "省卫健委（示范）", None, ""),
    ("hangzhou-bureau", "bureau", "杭州市卫健委（示范）", None, "杭州"),
    ("nb-doctor", "doctor", "宁波示范人民医院 放射科 张医生", "ZJ-NB-001", ""),
)


@dataclass(frozen=True, slots=True)
class DashboardDemo:
    accounts: tuple[tuple[str, str], ...]
    cross_reads: int


def prepare(services: Any, province: Province) -> DashboardDemo:
    """Idempotent: a rerun finds the hospital and accounts there and reads again."""
    with contextlib.suppress(AlreadyExistsError):
        services.hospitals.register(SILENT, actor=LOCAL_OPERATOR)
    # Registered a month ago (the demo only: nothing else moves a registration date).
    with services.health._db.write() as session:
        session.execute(update(Hospital).where(Hospital.code == SILENT.code).values(
            created_at=datetime.now(UTC) - timedelta(days=30)))
    accounts = []
    for username, kind, name, hospital, area in ACCOUNTS:
        with contextlib.suppress(AlreadyExistsError):
            services.accounts.create_account(NewAccount(
                kind=kind, username=username, password=PASSWORD, display_name=name,
                hospital_code=hospital, area=area), by=LOCAL_OPERATOR)
        accounts.append((username, kind if not area else f"{kind} {area}"))
    reads = _cross_hospital_reads(services, province)
    if services.stats is not None:
        services.stats.rollup.run()
    return DashboardDemo(tuple(accounts), reads)


def _cross_hospital_reads(services: Any, province: Province) -> int:
    """The Ningbo doctor reads studies other hospitals made: one resident under an
    in-person consent, another under break-glass (reviewed later by an administrator)."""
    doctor = services.accounts.sign_in_password("nb-doctor", PASSWORD,
                                                requester="demo").actor
    elsewhere: dict[str, list[Any]] = {}
    for exam in province.exams:
        if exam.hospital.code != "ZJ-NB-001":
            elsewhere.setdefault(exam.resident.national_id, []).append(exam)
    chosen = sorted(elsewhere.items(), key=lambda kv: -len({e.hospital.code for e in kv[1]}))
    reads = 0
    for i, (national_id, exams) in enumerate(chosen[:2]):
        request = GrantRequest(purpose="会诊：对比既往影像（示范）" if i == 0 else
                               "急诊：患者昏迷，需要既往头颅影像（示范）", national_id=national_id)
        try:
            if i == 0:
                services.consent.in_person(doctor, request, InPersonEvidence(
                    id_card_number=national_id, witness_name="护士 王（示范）"))
            else:
                services.consent.break_glass(doctor, request)
        except CloudfilmError:
            continue
        for exam in exams[:3]:
            try:
                services.retrieve.metadata(exam.study_uid, actor=doctor)
                reads += 1
            except CloudfilmError:
                continue
    return reads
