"""Queries of AI assistance (services/ai): algorithms, enablement, the ingest outbox, the
UPS worklist and results. Never commits; the service owns transactions.

:func:`covers` and :func:`covered_studies` are the data rule the access policy applies
to an AI algorithm: a study is readable by it only while it holds an IN PROGRESS workitem
for it, the algorithm is approved, its hospital still enables it, and the resident has not
refused research/AI use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, func, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    AiAlgorithm,
    AiEnablement,
    AiPendingStudy,
    AiResult,
    AiWorkitem,
    Hospital,
    Instance,
    PatientLink,
    Resident,
    Series,
    Study,
)
from cloudfilm.infrastructure.db.session import dialect_of

IN_PROGRESS = "IN PROGRESS"
SCHEDULED = "SCHEDULED"


# -- algorithms ------------------------------------------------------------------------------

def algorithm(session: Session, public_id: str, *, lock: bool = False) -> AiAlgorithm | None:
    stmt = select(AiAlgorithm).where(AiAlgorithm.public_id == public_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def algorithm_by_pk(session: Session, pk: int) -> AiAlgorithm | None:
    return session.get(AiAlgorithm, pk)


def algorithm_by_token(session: Session, token_hash: str) -> AiAlgorithm | None:
    return session.scalars(select(AiAlgorithm).where(
        AiAlgorithm.token_hash == token_hash, AiAlgorithm.kind == "external")).first()


def algorithms(session: Session) -> list[AiAlgorithm]:
    return list(session.scalars(select(AiAlgorithm).order_by(AiAlgorithm.id)))


def enabled_hospitals(session: Session, algorithm_pk: int) -> list[str]:
    return list(session.scalars(
        select(Hospital.code).join(AiEnablement, AiEnablement.hospital_id == Hospital.id)
        .where(AiEnablement.algorithm_id == algorithm_pk).order_by(Hospital.code)))


def hospital_id(session: Session, code: str) -> int | None:
    return session.scalar(select(Hospital.id).where(Hospital.code == code))


def set_enabled(session: Session, algorithm_pk: int, hospital_pk: int, enabled: bool, *,
                by: str, now: datetime) -> None:
    if not enabled:
        session.execute(delete(AiEnablement).where(AiEnablement.algorithm_id == algorithm_pk,
                                                   AiEnablement.hospital_id == hospital_pk))
        return
    ins = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    session.execute(ins(AiEnablement).values(algorithm_id=algorithm_pk, hospital_id=hospital_pk,
                                            enabled_by=by, enabled_at=now)
                    .on_conflict_do_nothing())


def any_enabled(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(
        AiEnablement.algorithm_id == AiAlgorithm.id, AiAlgorithm.status == "approved"))))


# -- the ingest outbox -----------------------------------------------------------------------

def touch_studies(session: Session, sop_uids: Sequence[str], due_at: datetime) -> None:
    """The studies of these (just indexed) objects are due for matching at ``due_at``; a
    study still receiving objects moves its due time on (it is matched once quiet)."""
    if not sop_uids:
        return
    studies = sorted(set(session.scalars(
        select(Study.study_instance_uid).join(Instance, Instance.study_fk == Study.id)
        .where(Instance.sop_instance_uid.in_(list(sop_uids))))))
    if not studies:
        return
    ins = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    stmt = ins(AiPendingStudy).values([{"study_instance_uid": u, "due_at": due_at}
                                       for u in studies])
    session.execute(stmt.on_conflict_do_update(index_elements=["study_instance_uid"],
                                               set_={"due_at": stmt.excluded.due_at}))


def take_due(session: Session, now: datetime, limit: int) -> list[str]:
    uids = list(session.scalars(select(AiPendingStudy.study_instance_uid)
                                .where(AiPendingStudy.due_at <= now)
                                .order_by(AiPendingStudy.due_at).limit(limit)))
    if uids:
        session.execute(delete(AiPendingStudy).where(
            AiPendingStudy.study_instance_uid.in_(uids), AiPendingStudy.due_at <= now))
    return uids


# -- matching ------------------------------------------------------------------------------

def study_profile(session: Session, study_uid: str) -> Any:
    """``(hospital_id, resident_id, refused, modalities, body_parts)`` of a study, None when
    absent; ``refused`` is the linked resident's refusal of research/AI use."""
    row = session.execute(
        select(Study.id, Study.hospital_id, PatientLink.resident_id,
               Resident.research_refused)
        .outerjoin(PatientLink, and_(PatientLink.patient_fk == Study.patient_fk,
                                     PatientLink.state == "linked"))
        .outerjoin(Resident, Resident.id == PatientLink.resident_id)
        .where(Study.study_instance_uid == study_uid)).first()
    if row is None:
        return None
    series = session.execute(select(Series.modality, Series.body_part_examined)
                             .where(Series.study_fk == row[0])).all()
    return (row[1], row[2], bool(row[3]),
            {str(m).upper() for m, _ in series if m},
            {str(b).upper() for _, b in series if b})


def candidates(session: Session, hospital_pk: int) -> list[AiAlgorithm]:
    """Approved algorithms the hospital enabled."""
    return list(session.scalars(
        select(AiAlgorithm).join(AiEnablement, AiEnablement.algorithm_id == AiAlgorithm.id)
        .where(AiEnablement.hospital_id == hospital_pk, AiAlgorithm.status == "approved")))


def add_workitem(session: Session, **values: Any) -> bool:
    """Insert a workitem unless the algorithm has one for the study; True when inserted."""
    ins = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    made = session.execute(ins(AiWorkitem).values(**values).on_conflict_do_nothing()
                           .returning(AiWorkitem.id)).first()
    return made is not None


# -- the worklist ----------------------------------------------------------------------------

def workitem(session: Session, uid: str, *, lock: bool = False) -> AiWorkitem | None:
    stmt = select(AiWorkitem).where(AiWorkitem.uid == uid)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def workitems(session: Session, *, algorithm_pk: int | None, states: Iterable[str] = (),
              study_uid: str = "", limit: int = 100, offset: int = 0) -> list[AiWorkitem]:
    stmt = select(AiWorkitem)
    if algorithm_pk is not None:
        stmt = stmt.where(AiWorkitem.algorithm_id == algorithm_pk)
    wanted = list(states)
    if wanted:
        stmt = stmt.where(AiWorkitem.state.in_(wanted))
    if study_uid:
        stmt = stmt.where(AiWorkitem.study_instance_uid == study_uid)
    return list(session.scalars(stmt.order_by(AiWorkitem.id).limit(limit).offset(offset)))


def to_run(session: Session, *, limit: int) -> list[str]:
    """Scheduled workitems of in-process plug-ins not yet handed to the queue; marks them."""
    uids = list(session.scalars(
        select(AiWorkitem.uid).join(AiAlgorithm, AiAlgorithm.id == AiWorkitem.algorithm_id)
        .where(AiWorkitem.state == SCHEDULED, not_(AiWorkitem.queued),
               AiAlgorithm.kind == "plugin", AiAlgorithm.status == "approved")
        .order_by(AiWorkitem.id).limit(limit)))
    if uids:
        session.execute(update(AiWorkitem).where(AiWorkitem.uid.in_(uids))
                        .values(queued=True))
    return uids


# -- the access rule -------------------------------------------------------------------------

def _allowed(algorithm_public_id: str, *, deidentified: bool = False
             ) -> ColumnElement[bool]:
    """Workitems through which the algorithm may read now (see the module docstring)."""
    refused = select(Resident.research_refused).join(
        PatientLink, and_(PatientLink.resident_id == Resident.id,
                          PatientLink.state == "linked")).join(
        Study, Study.patient_fk == PatientLink.patient_fk).where(
        Study.study_instance_uid == AiWorkitem.study_instance_uid).limit(1)
    return and_(
        AiWorkitem.state == IN_PROGRESS,
        AiAlgorithm.public_id == algorithm_public_id,
        AiAlgorithm.status == "approved",
        # An algorithm approved for de-identified input never reads the originals.
        AiAlgorithm.input == ("deidentified" if deidentified else "original"),
        exists().where(AiEnablement.algorithm_id == AiAlgorithm.id,
                       AiEnablement.hospital_id == AiWorkitem.hospital_id),
        or_(refused.scalar_subquery().is_(None), not_(refused.scalar_subquery())))


def covers(conn: Any, algorithm_public_id: str, study_uid: str, *,
           deidentified: bool = False) -> bool:
    """Whether the algorithm may read this study now (one indexed query): its original
    images, or (``deidentified``) the de-identified copies the AI service makes."""
    return bool(conn.execute(
        select(AiWorkitem.id).join(AiAlgorithm, AiAlgorithm.id == AiWorkitem.algorithm_id)
        .where(AiWorkitem.study_instance_uid == study_uid,
               _allowed(algorithm_public_id, deidentified=deidentified))
        .limit(1)).first())


def study_objects(session: Session, study_uid: str) -> list[tuple[str, str]]:
    """``(SOP Instance UID, blob key)`` of a study's current objects, in series order."""
    return [(u, k) for u, k in session.execute(
        select(Instance.sop_instance_uid, Instance.blob_key)
        .join(Study, Study.id == Instance.study_fk)
        .join(Series, Series.id == Instance.series_fk)
        .where(Study.study_instance_uid == study_uid)
        .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id))]


def covered_studies(algorithm_public_id: str) -> ColumnElement[bool]:
    """The same rule as a WHERE clause on ``study`` (QIDO by an algorithm)."""
    return Study.study_instance_uid.in_(
        select(AiWorkitem.study_instance_uid)
        .join(AiAlgorithm, AiAlgorithm.id == AiWorkitem.algorithm_id)
        .where(_allowed(algorithm_public_id)))


# -- results ---------------------------------------------------------------------------------

def add_result(session: Session, **values: Any) -> AiResult:
    row = AiResult(**values)
    session.add(row)
    session.flush()
    return row


def _lineage(name: str, vendor: str, study_uid: str) -> ColumnElement[bool]:
    """Results of the same algorithm (name and vendor, any version of it) on a study."""
    return and_(AiResult.study_instance_uid == study_uid,
                AiResult.workitem_id.in_(
                    select(AiWorkitem.id).join(AiAlgorithm,
                                               AiAlgorithm.id == AiWorkitem.algorithm_id)
                    .where(AiAlgorithm.name == name, AiAlgorithm.vendor == vendor)))


def next_version(session: Session, name: str, vendor: str, study_uid: str) -> int:
    """The version the next results of this algorithm on this study get (1 for the first)."""
    top = session.scalar(select(func.max(AiResult.version))
                         .where(_lineage(name, vendor, study_uid)))
    return int(top or 0) + 1


def supersede(session: Session, name: str, vendor: str, study_uid: str, below: int,
              now: datetime) -> int:
    """Mark the current results older than version ``below`` superseded (kept, not shown as
    current); returns how many rows."""
    done = session.execute(update(AiResult).where(
        _lineage(name, vendor, study_uid), AiResult.version < below,
        AiResult.superseded_at.is_(None)).values(superseded_at=now)
        .execution_options(synchronize_session=False))
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


def results(session: Session, study_uid: str
            ) -> list[tuple[AiResult, AiAlgorithm, AiWorkitem]]:
    """A study's results with their algorithm and workitem, newest version first."""
    rows = session.execute(
        select(AiResult, AiAlgorithm, AiWorkitem)
        .join(AiWorkitem, AiWorkitem.id == AiResult.workitem_id)
        .join(AiAlgorithm, AiAlgorithm.id == AiWorkitem.algorithm_id)
        .where(AiResult.study_instance_uid == study_uid)
        .order_by(AiResult.version.desc(), AiResult.id)).all()
    return [(r, a, w) for r, a, w in rows]


def result(session: Session, sop_uid: str, *, lock: bool = False) -> AiResult | None:
    stmt = select(AiResult).where(AiResult.sop_instance_uid == sop_uid)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def results_of_workitem(session: Session, workitem_pk: int, *, lock: bool = False
                        ) -> list[AiResult]:
    stmt = select(AiResult).where(AiResult.workitem_id == workitem_pk).order_by(AiResult.id)
    if lock:
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))


def ai_series(conn: Any, study_uid: str) -> set[str]:
    """Series UIDs of a study that hold AI results (the portal never lists them)."""
    return set(conn.execute(select(AiResult.series_instance_uid)
                            .where(AiResult.study_instance_uid == study_uid)).scalars())


# -- re-runs ---------------------------------------------------------------------------------

def runs(session: Session, algorithm_pk: int, study_uid: str) -> list[AiWorkitem]:
    """The algorithm's workitems for a study, oldest run first."""
    return list(session.scalars(select(AiWorkitem).where(
        AiWorkitem.algorithm_id == algorithm_pk,
        AiWorkitem.study_instance_uid == study_uid).order_by(AiWorkitem.run)))
