"""A small workstation world on top of the access tests' province: hospitals HA and HB
(both tertiary), resident R1 with a study at each and a recent chest CT at HB with a final
report (10 days ago: the duplicate-exam prompt), R2 only at HB; doctors with passwords at
HA (``dr.a``) and HB (``dr.b``); R1 has a portal account (phone) for SMS and portal
consent."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from fastapi.testclient import TestClient
from tests.integration.access.conftest import NID1, NID2, Province
from tests.integration.reports.support import fhir_report
from tests.integration.web.support import PHONE1, ct_series, latest_code, register

from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.access.actor import LOCAL_OPERATOR

PASSWORD = "correct-horse-42"
ORIGIN = {"origin": "http://testserver"}
DESK = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130"}


@dataclass
class Desk:
    province: Province
    recent_ct: str  # HB, R1, 10 days ago, final report
    recent_report: str


def build(province: Province, folder: Path) -> Desk:
    services = province.services
    for user, code, name in (("dr.a", "HA", "李医生"), ("dr.b", "HB", "陈医生")):
        services.accounts.create_account(NewAccount(
            kind="doctor", username=user, password=PASSWORD, display_name=name,
            hospital_code=code, department="放射科"), by=LOCAL_OPERATOR)
    services.accounts.create_account(NewAccount(
        kind="admin", username="official", password=PASSWORD, display_name="卫健委"),
        by=LOCAL_OPERATOR)
    day = (datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(days=10)).strftime("%Y%m%d")
    study, _series = ct_series(services, folder, code="HB", nid=NID1, name="Wang^XiaoDong",
                               slices=3, study_date=day)
    recorded = services.reports.receive_fhir(orjson.dumps(fhir_report(
        key="WS-RECENT", study_uid=study)), actor=province.hospital("HB"))
    register(services, PHONE1, "Wang XiaoDong", NID1)
    return Desk(province, study, recorded.report_id)


def csrf_of(client: TestClient, path: str = "/workstation/signin") -> str:
    page = client.get(path)
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def sign_in(client: TestClient, user: str = "dr.a", password: str = PASSWORD,
            next_: str = "") -> object:
    token = csrf_of(client)
    return client.post("/workstation/signin", data={
        "username": user, "password": password, "csrf_token": token, "next": next_},
        headers=ORIGIN)


def ref_of(page_text: str) -> str:
    found = re.search(r'href="/workstation/patients/([rp]\d+-[0-9a-f]{24})"', page_text)
    assert found, page_text[:2000]
    return found.group(1)


__all__ = ["DESK", "NID1", "NID2", "ORIGIN", "PASSWORD", "PHONE1", "Desk", "build",
           "csrf_of", "latest_code", "ref_of", "sign_in"]
