"""Decisions, the order feed, the figures, and the REST and CDS Hooks doors."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloudfilm.infrastructure.db.models import AuditEvent
from cloudfilm.interfaces.api.rest import cds_hooks
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.errors import AlreadyExistsError, InvalidInputError, NotFoundError
from cloudfilm.services.recognition.service import CheckRequest

from .conftest import NID2, Province

ADMIN = Actor(kind="admin", subject="admin", display="administrator")
ADMIN_HEADERS = {"Authorization": "Bearer test-admin-token"}


def _check(p: Province, code: str = "HA", item: str = "CT-CHEST") -> str:
    return p.services.recognition.check(
        p.doctor(code), CheckRequest(patient_id="HA-001", item_code=item,
                                     department="respiratory")).decision_id


def test_decisions_and_the_repeat_anyway_figure(province: Province) -> None:
    svc = province.services.recognition
    doctor = province.doctor("HA")
    accepted, repeated, performed_anyway, other = (_check(province) for _ in range(4))
    svc.decide(doctor, accepted, "accepted")
    svc.decide(doctor, repeated, "repeat", reason="condition_changed")
    svc.decide(doctor, performed_anyway, "accepted")
    with pytest.raises(InvalidInputError):
        svc.decide(doctor, other, "repeat", reason="bored")
    with pytest.raises(InvalidInputError):
        svc.decide(doctor, other, "repeat", reason="other")  # needs a text
    svc.decide(doctor, other, "repeat", reason="other", text="family insists on our scanner")
    with pytest.raises(AlreadyExistsError):
        svc.decide(doctor, accepted, "repeat", reason="emergency")
    # Another hospital cannot see or decide HA's decision ids.
    with pytest.raises(NotFoundError):
        svc.decide(province.hospital("HB"), _check(province), "accepted")
    with pytest.raises(NotFoundError):
        svc.performed(province.hospital("HB"), accepted)
    # The order feed says the "accepted" exam was performed anyway.
    svc.performed(province.hospital("HA"), performed_anyway, at=datetime.now(UTC))
    [row] = svc.savings(province.hospital("HA"))
    assert (row.hospital_code, row.department, row.item_code) == ("HA", "respiratory",
                                                                  "CT-CHEST")
    assert (row.checks, row.prompts, row.accepted, row.accepted_then_performed,
            row.undecided) == (5, 5, 2, 1, 1)  # the fifth: checked, never decided
    assert row.repeats == {"condition_changed": 1, "other": 1}
    price = next(p["price_yuan"] for p in svc.prices()
                 if p["item_code"] == "CT-CHEST" and p["level"] == "tertiary")
    assert row.cost_avoided_yuan == pytest.approx(price)  # one accepted, not performed
    assert row.dose_avoided_msv == pytest.approx(7.0)  # Mettler 2008, chest CT
    svc.put_price(ADMIN, "CT-CHEST", "tertiary", 100)
    assert svc.savings(ADMIN, hospital_code="HA")[0].cost_avoided_yuan == pytest.approx(100)
    assert svc.savings(province.hospital("HB")) == []  # its own figures only
    decided = province.sql(select(AuditEvent.reason).where(
        AuditEvent.action == "recognition.decide"))
    assert sorted(r.reason for r in decided) == ["accepted", "accepted", "repeat", "repeat"]


def test_accepting_without_a_prior_is_refused(province: Province) -> None:
    svc = province.services.recognition
    decision = svc.check(province.hospital("HA"), CheckRequest(
        patient_id="HA-001", item_code="MR-KNEE")).decision_id
    with pytest.raises(InvalidInputError):
        svc.decide(province.hospital("HA"), decision, "accepted")


def _credential(province: Province, code: str) -> dict[str, str]:
    issued = province.services.credentials.issue(code, label="his")
    return {"Authorization": f"Bearer {issued.token}"}


def test_rest_check_decide_and_savings_csv(province: Province, client: TestClient) -> None:
    ha = _credential(province, "HA")
    r = client.post("/api/v1/recognition/check", headers=ha, json={
        "patient_id": "HA-001", "item_code": "CT-CHEST", "department": "ER"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["priors"]) == 2 and set(body["priors"][0]) == {
        "study_instance_uid", "study_date", "days_ago", "hospital_code", "hospital_name",
        "hospital_level", "item_code", "item_name_zh", "item_name_en", "report_status",
        "reason"}
    r = client.post(f"/api/v1/recognition/decisions/{body['decision_id']}", headers=ha,
                    json={"decision": "repeat", "reason": "emergency"})
    assert r.status_code == 204, r.text
    r = client.post(f"/api/v1/recognition/decisions/{body['decision_id']}", headers=ha,
                    json={"decision": "accepted"})
    assert r.status_code == 409
    # The hospital's credential cannot change rules or read the unmapped list.
    assert client.put("/api/v1/recognition/items/CT-CHEST", headers=ha,
                      json={"window_days": 365}).status_code == 403
    assert client.get("/api/v1/recognition/unmapped", headers=ha).status_code == 403
    # Nor fish for a national ID it has no record of.
    hb_only = client.post("/api/v1/recognition/check", headers=ha,
                          json={"national_id": NID2, "item_code": "CT-CHEST"})
    assert hb_only.status_code == 404
    r = client.put("/api/v1/recognition/items/CT-CHEST", headers=ADMIN_HEADERS,
                   json={"window_days": 45})
    assert r.status_code == 200 and r.json()["window_days"] == 45
    r = client.get("/api/v1/recognition/savings", headers=ADMIN_HEADERS,
                   params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    [row] = list(csv.DictReader(io.StringIO(r.text)))
    assert (row["hospital_code"], row["department"], row["checks"],
            row["repeat_emergency"]) == ("HA", "ER", "1", "1")
    assert client.get("/api/v1/recognition/savings", headers=ADMIN_HEADERS,
                      params={"month": "2026-13x"}).status_code == 400


def _order_select_request(patient_id: str, codings: list[dict[str, str]]) -> dict[str, Any]:
    """The shape of the specification's order-select example request (hooks/order-select),
    with a ServiceRequest as the draft order."""
    return {
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": "http://his.example.org/fhir",
        "hook": "order-select",
        "context": {
            "userId": "PractitionerRole/123",
            "patientId": patient_id,
            "encounterId": "enc89284",
            "selections": ["ServiceRequest/ct-order-1"],
            "draftOrders": {"resourceType": "Bundle", "entry": [
                {"resource": {"resourceType": "ServiceRequest", "id": "ct-order-1",
                              "status": "draft", "intent": "order",
                              "code": {"coding": codings},
                              "subject": {"reference": f"Patient/{patient_id}"}}},
                {"resource": {"resourceType": "ServiceRequest", "id": "not-selected",
                              "status": "draft", "intent": "order",
                              "code": {"coding": [{"system": cds_hooks.ITEM_SYSTEM,
                                                   "code": "CT-HEAD"}]}}}]},
        },
        "prefetch": {},
    }


def test_cds_hooks_round_trip(province: Province, client: TestClient) -> None:
    ha = _credential(province, "HA")
    discovery = client.get("/cds-services")
    assert discovery.status_code == 200
    parsed = cds_hooks.Discovery.model_validate(discovery.json())
    assert {s.hook for s in parsed.services} == {"order-select", "order-sign"}
    request = _order_select_request("HA-001", [{"system": cds_hooks.ITEM_SYSTEM,
                                                "code": "CT-CHEST"}])
    r = client.post("/cds-services/cloudfilm-recognition-select", headers=ha, json=request)
    assert r.status_code == 200, r.text
    response = cds_hooks.CdsResponse.model_validate(r.json())
    [card] = response.cards
    assert card.indicator == "warning" and len(card.summary) < 140
    assert card.selectionBehavior == "at-most-one" and card.suggestions is not None
    use, repeat = card.suggestions
    assert use.actions is not None and use.actions[0].type == "delete"
    assert not repeat.actions and repeat.uuid != use.uuid
    assert use.actions[0].resourceId == "ServiceRequest/ct-order-1"
    assert card.links and card.links[0].type == "absolute"
    assert card.overrideReasons and {c.code for c in card.overrideReasons} >= {"emergency"}
    assert "secret" not in r.text
    # order-sign checks every draft order (CT-HEAD has no prior: no card for it).
    sign = {**request, "hook": "order-sign", "hookInstance": str(uuid.uuid4())}
    r2 = client.post("/cds-services/cloudfilm-recognition-sign", headers=ha, json=sign)
    assert r2.status_code == 200 and len(r2.json()["cards"]) == 1
    # Wrong hook for the service, malformed request: 400 / 422.
    assert client.post("/cds-services/cloudfilm-recognition-sign", headers=ha,
                       json=request).status_code == 400
    broken = {**request, "context": {"patientId": "HA-001"}}
    assert client.post("/cds-services/cloudfilm-recognition-select", headers=ha,
                       json=broken).status_code == 422
    # Feedback: the clinician overrode the card with a reason: a repeat decision.
    fb = {"feedback": [{"card": card.uuid, "outcome": "overridden",
                        "overrideReason": {"reason": {"code": "patient_request",
                                                      "system": cds_hooks.REASON_SYSTEM},
                                           "userComment": "wants it here"},
                        "outcomeTimestamp": datetime.now(UTC).isoformat()}]}
    assert client.post("/cds-services/cloudfilm-recognition-select/feedback", headers=ha,
                       json=fb).status_code == 200
    [sign_card] = cds_hooks.CdsResponse.model_validate(r2.json()).cards
    assert sign_card.suggestions is not None
    accept = {"feedback": [{"card": sign_card.uuid, "outcome": "accepted",
                            "acceptedSuggestions": [{"id": sign_card.suggestions[0].uuid}],
                            "outcomeTimestamp": datetime.now(UTC).isoformat()}]}
    assert client.post("/cds-services/cloudfilm-recognition-sign/feedback", headers=ha,
                       json=accept).status_code == 200
    rows = {r.item_code: r for r in province.services.recognition.savings(
        province.hospital("HA"))}
    assert (rows["CT-HEAD"].checks, rows["CT-HEAD"].prompts) == (1, 0)  # checked, no card
    row = rows["CT-CHEST"]
    assert (row.checks, row.accepted, row.repeats) == (2, 1, {"patient_request": 1})
