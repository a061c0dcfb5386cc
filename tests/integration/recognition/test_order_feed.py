"""The order feed: HL7 v2 ORM^O01 / OMG^O19 through the HL7 door and FHIR R4
ServiceRequest, each answered with the recognition check; "performed" later by order
number; scoped to the sending hospital's credential; audited."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloudfilm.infrastructure.db.models import AuditEvent, RecognitionCheck
from cloudfilm.infrastructure.orders import fhir, hl7v2
from cloudfilm.infrastructure.orders.order import OrderFormatError
from cloudfilm.interfaces.api.http import create_app

from .conftest import NID1, Province

ER7 = {"content-type": "x-application/hl7-v2+er7"}


def orm(*, control: str = "NW", status: str = "", order: str = "ORD-1",
        patient: str = "HA-001", service: str = "CT-CHEST^胸部CT平扫^CFITEM",
        kind: str = "ORM^O01", charset: str = "UNICODE UTF-8") -> bytes:
    """An order message the way a Chinese HIS sends it (segments end in CR)."""
    segments = [
        f"MSH|^~\\&|HIS|HA|CLOUDFILM|PROVINCE|20261203101500||{kind}|MSG{order}|P|2.5|||||"
        f"{charset}",
        f"PID|1||{patient}^^^HA^PI||王^小东||19600102|M",
        "PV1|1|O|RESP^^^HA||||||||呼吸内科",
        f"ORC|{control}|{order}|||{status}||||20261203101500||||||||呼吸内科^呼吸内科",
        f"OBR|1|{order}||{service}",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def service_request(*, status: str = "active", order: str = "SR-1",
                    subject: dict[str, object] | None = None,
                    code: str = "CT-CHEST") -> dict[str, object]:
    return {
        "resourceType": "ServiceRequest", "status": status, "intent": "order",
        "identifier": [{"system": "urn:oid:1.2.156.HA.orders", "value": order}],
        "code": {"coding": [{"system": "urn:cloudfilm:recognition-item", "code": code}]},
        "subject": subject or {"reference": "Patient/HA-001"},
        "requester": {"display": "呼吸内科"},
        "occurrenceDateTime": "2026-12-03T10:00:00+08:00",
    }


@pytest.fixture
def api(province: Province) -> Iterator[TestClient]:
    with TestClient(create_app(province.services)) as client:
        yield client


def _credential(p: Province, code: str) -> dict[str, str]:
    issued = p.services.credentials.issue(code, label="his")
    return {"Authorization": f"Bearer {issued.token}"}


def _segments(text: str) -> list[list[str]]:
    return [line.split("|") for line in text.strip("\r").split("\r")]


def test_readers_refuse_what_they_cannot_read() -> None:
    [order] = hl7v2.read_orders(orm())
    assert (order.action, order.order_ref, order.patient_id, order.item_code,
            order.department) == ("check", "ORD-1", "HA-001", "CT-CHEST", "呼吸内科")
    [proc] = hl7v2.read_orders(orm(service="HIS-0042^胸部CT^L", kind="OMG^O19"))
    assert (proc.item_code, proc.procedure_code) == ("", "HIS-0042")
    [done] = hl7v2.read_orders(orm(control="SC", status="CM"))
    assert done.action == "performed" and done.performed_at is not None
    assert hl7v2.is_order(orm()) and not hl7v2.is_order(orm(kind="ORU^R01"))
    for bad, where in ((orm(control="XX"), "ORC-1"), (orm(order=""), "ORC-2"),
                       (orm(patient=""), "PID-3"), (orm(service=""), "OBR-4")):
        with pytest.raises(OrderFormatError) as caught:
            hl7v2.read_orders(bad)
        assert caught.value.field == where
    assert fhir.read_service_request(orjson.dumps(service_request())).item_code == "CT-CHEST"
    national = fhir.read_service_request(service_request(subject={"identifier": {
        "system": "urn:oid:2.16.156.10011.1.3", "value": NID1}}))
    assert (national.national_id, national.patient_id) == (NID1, "")
    with pytest.raises(OrderFormatError, match="intent"):
        fhir.read_service_request({k: v for k, v in service_request().items()
                                   if k != "intent"})
    with pytest.raises(OrderFormatError) as caught:
        fhir.read_service_request({**service_request(), "identifier": []})
    assert caught.value.field == "ServiceRequest.identifier"


def test_hl7_order_is_answered_with_the_prompt_then_performed(province: Province,
                                                              api: TestClient) -> None:
    ha = _credential(province, "HA")
    sent = api.post("/api/v1/hl7", content=orm(), headers={**ha, **ER7})
    assert sent.status_code == 200, sent.text
    segments = _segments(sent.text)
    assert segments[0][8] == "ORR^O02^ORR_O02" and segments[1][:3] == ["MSA", "AA",
                                                                        "MSGORD-1"]
    [nte] = [s for s in segments if s[0] == "NTE"]
    assert "10天前" in nte[3] and "可互认" in nte[3]
    zrc = [s for s in segments if s[0] == "ZRC"]
    # HB 10 and 30 days ago (final), HC 5 and HP 3 are not tertiary; HB 2 has no final
    # report: two priors, newest first.
    assert [s[7] for s in zrc] == ["10", "30"]
    decision = zrc[0][2]
    assert zrc[0][3] == "ORD-1" and zrc[0][4] == "CT-CHEST"
    assert zrc[0][5] == province.studies["hb10"] and zrc[0][8] == "HB^Hospital HB"
    assert "secret" not in sent.text  # never report text
    [row] = province.sql(select(RecognitionCheck.order_ref, RecognitionCheck.public_id,
                                RecognitionCheck.department))
    assert tuple(row) == ("ORD-1", decision, "呼吸内科")
    # The same order sent again (an MLLP resend): the same decision, counted once.
    again = api.post("/api/v1/hl7", content=orm(), headers={**ha, **ER7})
    assert [s[2] for s in _segments(again.text) if s[0] == "ZRC"] == [decision, decision]
    assert len(province.sql(select(RecognitionCheck.id))) == 1
    # The doctor accepted the prior; the RIS later says the exam was done anyway.
    province.services.recognition.decide(province.hospital("HA"), decision, "accepted")
    done = api.post("/api/v1/hl7", content=orm(control="SC", status="CM", kind="OMG^O19"),
                    headers={**ha, **ER7})
    assert done.status_code == 200 and _segments(done.text)[1][1] == "AA"
    assert _segments(done.text)[0][8] == "ORG^O20^ORG_O20"
    [row] = province.services.recognition.savings(province.hospital("HA"))
    assert (row.accepted, row.accepted_then_performed, row.cost_avoided_yuan) == (1, 1, 0)
    actions = {a for (a,) in province.sql(select(AuditEvent.action).where(
        AuditEvent.action.like("recognition.%")))}
    assert {"recognition.check", "recognition.decide", "recognition.performed"} <= actions
    # Reports still go through the same door.
    oru = api.post("/api/v1/hl7", content=orm(kind="ORU^R01"), headers={**ha, **ER7})
    assert oru.status_code == 400 and "MSA|AE" in oru.text


def test_a_hospital_cannot_check_or_close_another_hospitals_patient_or_order(
        province: Province, api: TestClient) -> None:
    hb = _credential(province, "HB")
    # HB has no patient "HA-001": the same refusal as for a person who does not exist.
    other = api.post("/api/v1/hl7", content=orm(), headers={**hb, **ER7})
    nobody = api.post("/api/v1/hl7", content=orm(patient="NOBODY"), headers={**hb, **ER7})
    assert other.status_code == nobody.status_code == 404
    assert _segments(other.text)[1][1] == "AE" and "ZRC" not in other.text
    assert _segments(other.text)[1][3] == _segments(nobody.text)[1][3]
    denied = province.sql(select(AuditEvent.reason).where(
        AuditEvent.action == "recognition.check", AuditEvent.outcome == "denied"))
    assert len(denied) == 2
    # HA's order number means nothing to HB.
    api.post("/api/v1/hl7", content=orm(), headers={**_credential(province, "HA"), **ER7})
    close = api.post("/api/v1/hl7", content=orm(control="SC", status="CM"),
                     headers={**hb, **ER7})
    assert close.status_code == 404
    assert province.sql(select(RecognitionCheck.performed_at)) == [(None,)]
    # No hospital credential at all.
    anonymous = api.post("/api/v1/fhir/ServiceRequest", content=orjson.dumps(
        service_request()), headers={"content-type": "application/fhir+json"})
    # (The test client is the loopback local operator: it must name a hospital, and a
    # feed message cannot.)
    assert anonymous.status_code == 400 and "hospital_code" in anonymous.text
    assert len(province.sql(select(RecognitionCheck.id))) == 1
    fhir_other = api.post("/api/v1/fhir/ServiceRequest", content=orjson.dumps(
        service_request()), headers={**hb, "content-type": "application/fhir+json"})
    assert fhir_other.status_code == 404
    assert fhir_other.json()["issue"][0]["code"] == "not-found"


def test_fhir_service_request_answered_with_detected_issues(province: Province,
                                                            api: TestClient) -> None:
    ha = {**_credential(province, "HA"), "content-type": "application/fhir+json"}
    sent = api.post("/api/v1/fhir/ServiceRequest", content=orjson.dumps(service_request()),
                    headers=ha)
    assert sent.status_code == 200, sent.text
    bundle = sent.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    outcome, *issues = [e["resource"] for e in bundle["entry"]]
    assert outcome["resourceType"] == "OperationOutcome"
    decision = outcome["issue"][0]["details"]["coding"][0]["code"]
    assert [i["resourceType"] for i in issues] == ["DetectedIssue", "DetectedIssue"]
    assert issues[0]["implicated"][0]["identifier"]["value"] == \
        f"urn:oid:{province.studies['hb10']}"
    assert "secret" not in sent.text
    # By national ID: HA has the resident registered, so it is found.
    national = api.post("/api/v1/fhir/ServiceRequest", headers=ha, content=orjson.dumps(
        service_request(order="SR-2", subject={"identifier": {
            "system": "urn:oid:2.16.156.10011.1.3", "value": NID1}})))
    assert national.status_code == 200 and len(national.json()["entry"]) == 3
    # Completed later: performed.
    done = api.post("/api/v1/fhir/ServiceRequest", headers=ha,
                    content=orjson.dumps(service_request(status="completed")))
    assert done.status_code == 200 and decision in done.json()["issue"][0]["diagnostics"]
    [(performed,)] = province.sql(select(RecognitionCheck.performed_at).where(
        RecognitionCheck.public_id == decision))
    assert performed is not None
    # A malformed resource names the element.
    bad = api.post("/api/v1/fhir/ServiceRequest", headers=ha, content=orjson.dumps(
        {**service_request(), "status": "on-hold"}))
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == [
        "ServiceRequest.status"]
