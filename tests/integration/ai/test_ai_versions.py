"""AI result versions and the doctor's confirmation, on both databases: a re-run makes a new
version and keeps the earlier one, marked superseded; every view (the doctor's sets, the
REST results, the portal) shows the current one and reaches the earlier; only the current
version is reviewed, as a whole set, with the doctor's name; the portal shows nothing
before a doctor confirmed, and then only confirmed sets; the SEG's mask is read under the
study's policy and audited naming the resident."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from cloudfilm.infrastructure.db.models import AuditEvent
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError, WorkitemStateError

from .test_ai import (  # noqa: F401
    ADMIN,
    NIDS,
    NODULES,
    _chest,
    _ingest,
    _nodule_algorithm,
    _query,
    _resident_of_study,
    services,
    settings,
)

DOCTOR = Actor(kind="doctor", subject="account:5", account_id=5, hospital_code="HZ1",
               display="王医生")
STRANGER = Actor(kind="doctor", subject="account:8", account_id=8, hospital_code="HZ2",
                 display="外院医生")


def test_rerun_versions_review_and_portal(services: Services, db_url: str,  # noqa: F811
                                          tmp_path: Path) -> None:
    assert services.ai is not None
    work, results = services.ai.work, services.ai.results
    algo = _nodule_algorithm(services)
    services.ai.registry.enable(ADMIN, algo, "HZ1")
    work.forget_cache()
    study = _ingest(services, tmp_path, _chest(NIDS[0], NODULES))
    assert work.run_pending() == {"COMPLETED": 1}
    resident = Actor(kind="resident", subject="account:30",
                     resident_ids=frozenset({_resident_of_study(db_url, study)}))

    [v1] = results.sets(DOCTOR, study)
    assert (v1.version, v1.current, v1.review) == (1, True, "")
    assert v1.sr_sop_instance_uid and v1.seg_sop_instance_uid
    assert sorted(round(f["diameter_mm"]) for f in v1.findings) == [8, 12]
    # The patient: nothing before a doctor confirmed, and never the AI series as images.
    shown, hidden = results.for_portal(resident, study)
    assert shown == [] and len(hidden) == 2
    with pytest.raises(NotAuthorizedError):
        results.sets(STRANGER, study)

    # The SEG as runs per source image, read under the study's policy.
    masks = results.mask(DOCTOR, study, v1.seg_sop_instance_uid)
    assert {m["segment"] for m in masks} == {1, 2}
    big = next(f for f in v1.findings if round(f["diameter_mm"]) == 12)
    on_slice = [m for m in masks if m["sop_instance_uid"] == big["sop_instance_uid"]]
    assert any(r == round(big["row"]) and a <= big["column"] < b
               for m in on_slice for r, a, b in m["runs"])  # type: ignore[attr-defined]
    with pytest.raises(NotAuthorizedError):
        results.mask(STRANGER, study, v1.seg_sop_instance_uid)

    # Confirmed by the doctor: the whole set (SR and SEG), with the doctor's name.
    assert work.review(DOCTOR, v1.seg_sop_instance_uid, True) == "confirmed"
    [v1] = results.sets(DOCTOR, study)
    assert (v1.review, v1.reviewer_name) == ("confirmed", "王医生")
    [seen], _ = results.for_portal(resident, study)
    assert (seen.version, seen.reviewer_name, seen.current) == (1, "王医生", True)

    # A re-run: version 2 is current, version 1 kept and superseded.
    again = work.create(ADMIN, algo, study)
    with pytest.raises(InvalidInputError):  # one run at a time
        work.create(ADMIN, algo, study)
    assert work.run(again.uid) == "COMPLETED"
    v2, old = results.sets(DOCTOR, study)
    assert (v2.version, v2.current, v2.review) == (2, True, "")
    assert (old.version, old.current, old.review) == (1, False, "confirmed")
    rows = work.results(DOCTOR, study)
    assert sorted((r.result_version, r.superseded) for r in rows) == [
        (1, True), (1, True), (2, False), (2, False)]
    # History is not reviewed again.
    with pytest.raises(WorkitemStateError):
        work.review(DOCTOR, old.sr_sop_instance_uid, False)
    # The portal: still only what a doctor confirmed (version 1, now marked superseded).
    shown, hidden = results.for_portal(resident, study)
    assert [(s.version, s.current) for s in shown] == [(1, False)] and len(hidden) == 4
    assert work.review(DOCTOR, v2.sr_sop_instance_uid, False) == "rejected"
    assert [s.version for s in results.for_portal(resident, study)[0]] == [1]
    assert work.review(DOCTOR, v2.sr_sop_instance_uid, True) == "confirmed"
    assert [(s.version, s.current) for s in results.for_portal(resident, study)[0]] == [
        (2, True), (1, False)]

    # Audited, naming the resident: the reviews, the doctors' and the resident's reads.
    events = _query(db_url, select(AuditEvent.action, AuditEvent.actor_kind,
                                   AuditEvent.resident_id, AuditEvent.outcome)
                    .where(AuditEvent.action.in_(["ai.review", "ai.results",
                                                  "ai.segmentation"])))
    rid = _resident_of_study(db_url, study)
    assert ("ai.review", "doctor", rid, "success") in events
    assert ("ai.results", "resident", rid, "allowed") in events
    assert ("ai.segmentation", "doctor", rid, "allowed") in events
    assert ("ai.segmentation", "doctor", rid, "denied") in events
