"""HL7 v2 ORU^R01 over the REST channel of the registration feed: ACK AA on success,
AE naming the problem otherwise; reports link like any other."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.reports.support import FINDINGS, IMPRESSION, oru_r01

from cloudfilm.interfaces.api.http import create_app

HL7_URL = "/api/v1/hl7"
ER7 = "x-application/hl7-v2+er7"


@pytest.fixture
def http(province: Province) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(province.services)) as client:
        yield client


def post(http: TestClient, p: Province, message: str | bytes,
         code: str = "HA") -> httpx.Response:
    token = p.services.credentials.issue(code).token
    body = message.encode() if isinstance(message, str) else message
    return http.post(HL7_URL, content=body,
                     headers={"Authorization": f"Bearer {token}", "Content-Type": ER7})


def msa(ack: str) -> list[str]:
    return next(s for s in ack.replace("\n", "\r").split("\r") if s.startswith("MSA")).split("|")


def test_oru_is_acknowledged_and_filed_with_its_study(province: Province,  # noqa: F811
                                                      http: TestClient) -> None:
    p = province
    response = post(http, p, oru_r01(study_uid=p.sa1, control_id="C-1"))
    assert response.status_code == 200, response.text
    assert msa(response.text)[1:3] == ["AA", "C-1"]
    [report] = http.get(f"/api/v1/studies/{p.sa1}/reports").json()
    assert (report["source"], report["status"], report["link_state"]) == \
        ("hl7v2", "final", "linked")
    assert report["findings"] == FINDINGS and report["impression"] == IMPRESSION
    assert (report["author"], report["verifier"]) == ("李医生", "张主任")
    # The correction (OBR-25 C) of the same filler order is version 2.
    post(http, p, oru_r01(study_uid=p.sa1, status="C", impression="更正：右肺上叶结节。"))
    detail = http.get(f"/api/v1/reports/{report['report_id']}").json()
    assert (detail["status"], detail["versions"]) == ("amended", 2)


def test_gb18030_message_is_decoded(province: Province, http: TestClient) -> None:  # noqa: F811
    p = province
    message = oru_r01(study_uid=p.sa1).replace("UNICODE UTF-8", "GB 18030-2000")
    assert post(http, p, message.encode("gb18030")).status_code == 200
    [report] = http.get(f"/api/v1/studies/{p.sa1}/reports").json()
    assert report["findings"] == FINDINGS


def test_bad_messages_get_an_ae_naming_the_problem(province: Province,  # noqa: F811
                                                   http: TestClient) -> None:
    p = province
    no_status = oru_r01(study_uid=p.sa1).replace("|CT|F|", "|CT||")
    response = post(http, p, no_status)
    assert response.status_code == 400
    assert msa(response.text)[1] == "AE"
    assert "OBR-25" in response.text
    wrong_type = oru_r01(study_uid=p.sa1).replace("ORU^R01", "ADT^A04")
    response = post(http, p, wrong_type)
    assert msa(response.text)[1] == "AE" and "MSH-9" in response.text
    response = post(http, p, b"not hl7 at all")
    assert response.status_code == 400
    # Another hospital's study: refused, nothing filed.
    response = post(http, p, oru_r01(study_uid=p.sb1), code="HA")
    assert response.status_code == 403 and msa(response.text)[1] == "AE"
    assert http.get(f"/api/v1/studies/{p.sb1}/reports").json() == []
