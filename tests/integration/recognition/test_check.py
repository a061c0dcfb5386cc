"""The check on both databases: window, levels, report status, the MPI, no fishing, audit."""

from __future__ import annotations

from dataclasses import asdict
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from cloudfilm.infrastructure.db.models import AuditEvent, RecognitionCheck
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError, NotFoundError
from cloudfilm.services.recognition.service import CheckRequest, RecognitionService

from .conftest import NID1, NID2, NID_NOBODY, Province

ADMIN = Actor(kind="admin", subject="admin", display="administrator")


def test_window_levels_and_report_status(province: Province) -> None:
    svc = province.services.recognition
    result = svc.check(province.doctor("HA"), CheckRequest(national_id=NID1,
                                                          item_code="CT-CHEST"))
    found = {p.study_instance_uid for p in result.priors}
    s = province.studies
    # Day 30 is in, day 31 out; the secondary (HC) and primary (HP) results are not
    # recognised by a tertiary hospital; a preliminary report is not enough.
    assert found == {s["hb10"], s["hb30"]}
    assert result.not_offered == {"level": 2, "no_final_report": 1}
    assert [p.days_ago for p in result.priors] == [10, 30]
    prior = result.priors[0]
    assert (prior.hospital_code, prior.hospital_level, prior.item_code,
            prior.report_status) == ("HB", "tertiary", "CT-CHEST", "final")
    assert "10 day(s) ago" in prior.reason and "30-day window" in prior.reason
    # The prompt carries no report text and no image data.
    assert "secret" not in str(asdict(result))


def test_local_id_and_procedure_code(province: Province) -> None:
    svc = province.services.recognition
    with pytest.raises(InvalidInputError, match="not mapped"):
        svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                       procedure_code="RIS-1234"))
    assert any(u["field"] == "order_code" and u["value"] == "HA:RIS-1234"
               for u in svc.unmapped())
    svc.put_code_map(ADMIN, "HA", "RIS-1234", "CT-CHEST")
    assert not any(u["value"] == "HA:RIS-1234" for u in svc.unmapped())
    result = svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                             procedure_code="RIS-1234"))
    assert result.item_code == "CT-CHEST" and len(result.priors) == 2


def test_level_rules_are_data(province: Province) -> None:
    svc = province.services.recognition
    hp = province.hospital("HP")
    province.services.residents.register_patient("HP", _reg("HP-9"))
    # A primary hospital accepts every level (and its own results).
    result = svc.check(hp, CheckRequest(patient_id="HP-9", item_code="CT-CHEST"))
    assert {p.hospital_code for p in result.priors} == {"HB", "HC", "HP"}
    # An administrator lets tertiary hospitals accept secondary results for this item.
    svc.put_item(ADMIN, {"code": "CT-CHEST", "accept_levels": {
        "tertiary": ["tertiary", "secondary"], "secondary": ["tertiary", "secondary"],
        "primary": ["tertiary", "secondary", "primary"]}})
    again = svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                           item_code="CT-CHEST"))
    assert {p.hospital_code for p in again.priors} == {"HB", "HC"}
    change = svc.history(entity="item", limit=1)[0]
    assert change["actor"] == "admin (administrator)" and change["key"] == "CT-CHEST"
    assert change["before"]["accept_levels"] != change["after"]["accept_levels"]
    # The window is data too.
    svc.put_item(ADMIN, {"code": "CT-CHEST", "window_days": 9})
    short = svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                           item_code="CT-CHEST"))
    assert {p.hospital_code for p in short.priors} == {"HC"}


def _reg(patient_id: str, nid: str = NID1) -> object:
    from cloudfilm.services.identity.mpi import Registration

    return Registration(patient_id=patient_id, national_id=nid, name="Wang^XiaoDong",
                        sex="M", birth_date="19600102")


def test_no_fishing_by_national_id(province: Province) -> None:
    """A hospital checks only patients it has a record of; the answer for "exists
    elsewhere" and "exists nowhere" is the same, and both are audited as denied."""
    svc = province.services.recognition
    ha = province.hospital("HA")
    messages = []
    for nid in (NID2, NID_NOBODY):
        with pytest.raises(NotFoundError) as err:
            svc.check(ha, CheckRequest(national_id=nid, item_code="CT-CHEST"))
        messages.append(err.value.message)
    assert messages[0] == messages[1]
    # Another hospital's local ID is not the ordering hospital's record either.
    r2_local = NID2  # HB's PatientID of R2
    with pytest.raises(NotFoundError):
        svc.check(ha, CheckRequest(patient_id=r2_local, item_code="CT-CHEST"))
    # A local ID and a national ID of two different people: refused.
    with pytest.raises(NotFoundError):
        svc.check(ha, CheckRequest(patient_id="HA-001", national_id=NID2,
                                   item_code="CT-CHEST"))
    denied = province.sql(select(AuditEvent.reason, AuditEvent.resident_id).where(
        AuditEvent.action == "recognition.check", AuditEvent.outcome == "denied"))
    assert len(denied) == 4 and {r.reason for r in denied} == {"no-local-record"}
    assert province.sql(select(RecognitionCheck.id)) == []
    # Residents may not check; a hospital may not check for another hospital.
    resident = Actor(kind="resident", subject="account:r", resident_ids=frozenset({1}))
    with pytest.raises(NotAuthorizedError):
        svc.check(resident, CheckRequest(national_id=NID1, item_code="CT-CHEST"))
    with pytest.raises(NotAuthorizedError):
        svc.check(ha, CheckRequest(national_id=NID1, item_code="CT-CHEST",
                                   hospital_code="HB"))


def test_audit_names_the_resident(province: Province) -> None:
    svc = province.services.recognition
    result = svc.check(province.doctor("HA"), CheckRequest(national_id=NID1,
                                                          item_code="CT-CHEST"))
    r1 = province.services.residents.xref(national_id=NID1).id
    rows = province.sql(select(AuditEvent).where(AuditEvent.action == "recognition.check",
                                                 AuditEvent.outcome == "allowed"))
    assert len(rows) == 1
    assert (rows[0].resident_id, rows[0].resource_uid, rows[0].actor_subject,
            rows[0].actor_hospital_code) == (r1, result.decision_id, "account:1", "HA")
    assert province.services.audit.verify().ok


def test_operator_acts_for_a_named_hospital(province: Province) -> None:
    svc = province.services.recognition
    with pytest.raises(InvalidInputError):
        svc.check(LOCAL_OPERATOR, CheckRequest(patient_id="HA-001", item_code="CT-CHEST"))
    result = svc.check(LOCAL_OPERATOR, CheckRequest(patient_id="HA-001", item_code="CT-CHEST",
                                                    hospital_code="HA"))
    assert len(result.priors) == 2


def test_incomplete_and_qc(province: Province) -> None:
    services = province.services
    svc = services.recognition
    # Without the final-report condition, a study just received with only a preliminary
    # report (hb2) is not complete until it has been quiet for the settle time; a final
    # report says the exam is done.
    svc.put_item(ADMIN, {"code": "CT-CHEST", "require_final_report": False})
    strict = RecognitionService(services.health._db, services.residents.protector,
                                services.audit, zone=ZoneInfo("Asia/Shanghai"),
                                settle_minutes=60)
    result = strict.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                                item_code="CT-CHEST"))
    assert {p.study_instance_uid for p in result.priors} == {province.studies["hb10"],
                                                             province.studies["hb30"]}
    assert result.not_offered == {"incomplete": 1, "level": 2}
    relaxed = svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                             item_code="CT-CHEST"))
    assert province.studies["hb2"] in {p.study_instance_uid for p in relaxed.priors}
    svc.put_item(ADMIN, {"code": "CT-CHEST", "require_final_report": True})
    svc.put_item(ADMIN, {"code": "CT-CHEST", "require_qc": True})
    svc.set_qc(ADMIN, province.studies["hb10"], "passed")
    result = svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                             item_code="CT-CHEST"))
    assert [p.study_instance_uid for p in result.priors] == [province.studies["hb10"]]
    assert result.not_offered["qc"] == 1
    with pytest.raises(NotAuthorizedError):
        svc.set_qc(province.hospital("HB"), province.studies["hb30"], "passed")


def test_unmapped_study_values_listed_then_mapped(province: Province) -> None:
    svc = province.services.recognition
    province.services.residents.register_patient("HA", _reg("HA-001"))
    uid = province.ingest("HB", NID1, 6, body="BACINO", description="Esame bacino")
    result = svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                             item_code="CT-PELVIS"))
    assert result.priors == ()
    listed = {(u["field"], u["value"]) for u in svc.unmapped()}
    assert ("body_part", "BACINO") in listed and ("description", "ESAME BACINO") in listed
    svc.put_term(ADMIN, "body_part", "bacino", "PELVIS")
    assert ("body_part", "BACINO") not in {(u["field"], u["value"]) for u in svc.unmapped()}
    result = svc.check(province.hospital("HA"), CheckRequest(patient_id="HA-001",
                                                             item_code="CT-PELVIS"))
    assert [p.study_instance_uid for p in result.priors] == [uid]
    with pytest.raises(NotAuthorizedError):
        svc.put_term(province.doctor("HA"), "body_part", "BECKEN", "PELVIS")


def test_rules_history_is_append_only(province: Province) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    svc = province.services.recognition
    svc.put_price(ADMIN, "CT-CHEST", "primary", 150)
    engine = create_engine(province.db_url)
    try:
        for statement in ("UPDATE recognition_change SET actor = 'someone else'",
                          "DELETE FROM recognition_change"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
    finally:
        engine.dispose()
    assert svc.history(entity="price", limit=1)[0]["actor"] == "admin (administrator)"
