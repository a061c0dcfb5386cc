"""The ``/admin`` pages of the recognition rules over HTTP: only administrators, CSRF and
Origin on every change, the catalogue edited and versioned, a hospital's procedure code
mapped, an unmapped body part mapped in one click (and the study then recognised), the
history and the figures."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.interfaces.web.security import SESSION_COOKIE
from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR
from cloudfilm.services.recognition.service import CheckRequest

from .conftest import NID1, Province

ORIGIN = {"origin": "http://testserver"}
PASSWORD = "correct horse battery"


def _account(p: Province, kind: str, username: str) -> str:
    """A signed-in session token for a new account of ``kind``."""
    p.services.accounts.create_account(NewAccount(
        kind=kind, username=username, password=PASSWORD, display_name=username,
        hospital_code="HA" if kind == "doctor" else None), by=LOCAL_OPERATOR)
    return p.services.accounts.sign_in_password(username, PASSWORD,
                                                requester="test").token


@pytest.fixture
def app_client(province: Province) -> Iterator[TestClient]:
    with TestClient(create_app(province.services), follow_redirects=False) as client:
        yield client


@pytest.fixture
def admin(province: Province, app_client: TestClient) -> TestClient:
    app_client.cookies.set(SESSION_COOKIE, _account(province, "admin", "commission.admin"))
    return app_client


def _csrf(client: TestClient, path: str = "/admin") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found.group(1)


def test_only_administrators_reach_the_admin_pages(province: Province,
                                                   app_client: TestClient) -> None:
    anonymous = app_client.get("/admin/recognition/items")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/workstation/signin?next=")
    app_client.cookies.set(SESSION_COOKIE, _account(province, "doctor", "dr.ha"))
    for path in ("/admin", "/admin/recognition/items", "/admin/recognition/unmapped",
                 "/admin/recognition/history", "/admin/recognition/figures"):
        assert app_client.get(path).status_code == 303, path
    token = _csrf_anyway(app_client)
    sent = app_client.post("/admin/recognition/items", headers=ORIGIN, data={
        "csrf_token": token, "code": "CT-HACK", "name_zh": "x", "name_en": "x",
        "modality": "CT", "body_region": "CHEST", "window_days": "30"})
    assert sent.status_code == 303 and "signin" in sent.headers["location"]
    assert "CT-HACK" not in {i.code for i in province.services.recognition.items()}


def _csrf_anyway(client: TestClient) -> str:
    """A CSRF token from a page anyone may open (the cookie is set by any page)."""
    client.get("/portal/signin")
    return str(client.cookies.get("cloudfilm_csrf"))


def test_index_and_catalogue_in_both_languages(admin: TestClient) -> None:
    index = admin.get("/admin")
    assert "互认" in index.text and "/admin/recognition/unmapped" in index.text
    page = admin.get("/admin/recognition/items")
    assert page.status_code == 200
    assert "胸部CT平扫" in page.text and "CT-CHEST" in page.text
    english = admin.get("/admin/recognition/items?lang=en")
    assert "CT chest, plain" in english.text and "Recognition catalogue" in english.text
    edit = admin.get("/admin/recognition/items/CT-CHEST")
    assert 'value="30"' in edit.text
    assert admin.get("/admin/recognition/items/NOPE").status_code == 404


def test_an_item_edited_on_the_page_changes_the_check_and_the_history(
        province: Province, admin: TestClient) -> None:
    svc = province.services.recognition
    form = {"code": "CT-CHEST", "name_zh": "胸部CT平扫", "name_en": "CT chest, plain",
            "modality": "CT", "body_region": "CHEST", "procedure": "plain",
            "window_days": "9", "typical_dose_msv": "7",
            "require_final_report": "on", "require_complete": "on", "active": "on",
            "accept_tertiary_tertiary": "on", "accept_secondary_tertiary": "on",
            "accept_secondary_secondary": "on", "accept_primary_tertiary": "on",
            "accept_primary_secondary": "on", "accept_primary_primary": "on"}
    # Without the CSRF token, and from another site: refused, nothing changed.
    assert admin.post("/admin/recognition/items", data=form,
                      headers=ORIGIN).status_code == 403
    token = _csrf(admin)
    foreign = admin.post("/admin/recognition/items", data={**form, "csrf_token": token},
                         headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert next(i for i in svc.items() if i.code == "CT-CHEST").window_days == 30
    saved = admin.post("/admin/recognition/items", data={**form, "csrf_token": token,
                                                         "price_secondary": "199.5"},
                       headers=ORIGIN)
    assert saved.status_code == 303, saved.text
    assert next(i for i in svc.items() if i.code == "CT-CHEST").window_days == 9
    assert {"item_code": "CT-CHEST", "level": "secondary", "price_yuan": 199.5} in svc.prices()
    # The 10-day-old chest CT is now outside the window.
    result = svc.check(province.doctor("HA"), CheckRequest(patient_id="HA-001",
                                                           item_code="CT-CHEST"))
    assert [p.days_ago for p in result.priors] == []
    history = admin.get("/admin/recognition/history?entity=item")
    assert "commission.admin" in history.text and "window_days: 30 → 9" in history.text
    # A bad value is said on the form (400), not saved.
    bad = admin.post("/admin/recognition/items", headers=ORIGIN, data={
        **form, "csrf_token": token, "window_days": "0"})
    assert bad.status_code == 400 and 'role="alert"' in bad.text
    # A new item.
    new = admin.post("/admin/recognition/items", headers=ORIGIN, data={
        "csrf_token": token, "code": "ct-neck", "name_zh": "颈部CT平扫",
        "name_en": "CT neck, plain", "modality": "CT", "body_region": "NECK",
        "procedure": "plain", "window_days": "30", "require_final_report": "on",
        "active": "on", "accept_tertiary_tertiary": "on"})
    assert new.status_code == 303
    item = next(i for i in svc.items() if i.code == "CT-NECK")
    assert item.accept_levels["tertiary"] == ["tertiary"] and not item.require_complete


def test_code_map_and_one_click_mapping_of_unmapped_values(province: Province,
                                                           admin: TestClient) -> None:
    svc = province.services.recognition
    # An order with an unknown hospital code and a study with an unknown body part.
    with pytest.raises(Exception, match="not mapped"):
        svc.check(province.doctor("HA"), CheckRequest(patient_id="HA-001",
                                                      procedure_code="HIS-0042"))
    province.ingest("HB", NID1, 4, body="TORSO_UPPER", description="", modality="CT")
    svc.check(province.doctor("HA"), CheckRequest(patient_id="HA-001", item_code="CT-CHEST"))
    listed = admin.get("/admin/recognition/unmapped")
    assert "HA:HIS-0042" in listed.text and "TORSO UPPER" in listed.text
    token = _csrf(admin)
    # Nothing is guessed: without a choice, nothing is mapped.
    empty = admin.post("/admin/recognition/unmapped/map", headers=ORIGIN, data={
        "csrf_token": token, "field": "body_part", "value": "TORSO UPPER", "target": ""})
    assert empty.status_code == 400
    mapped = admin.post("/admin/recognition/unmapped/map",
                        headers={**ORIGIN, "hx-request": "true", "x-csrf-token": token},
                        data={"field": "body_part", "value": "TORSO UPPER",
                              "target": "CHEST", "hospital_code": "HB",
                              "problem": "unmapped"})
    assert mapped.status_code == 200 and "CHEST" in mapped.text and "<tr" in mapped.text
    order = admin.post("/admin/recognition/unmapped/map", headers=ORIGIN, data={
        "csrf_token": token, "field": "order_code", "value": "HA:HIS-0042",
        "target": "CT-CHEST"})
    assert order.status_code == 303
    maps = admin.get("/admin/recognition/code-maps?hospital=HA")
    assert "HIS-0042" in maps.text
    after = admin.get("/admin/recognition/unmapped")
    assert "HA:HIS-0042" not in after.text and "TORSO UPPER" not in after.text
    # The order code now checks, and the study of the newly mapped body part is offered.
    result = svc.check(province.doctor("HA"), CheckRequest(patient_id="HA-001",
                                                           procedure_code="HIS-0042"))
    assert result.item_code == "CT-CHEST" and 4 in [p.days_ago for p in result.priors]
    # Map and unmap on the code-map page.
    added = admin.post("/admin/recognition/code-maps", headers=ORIGIN, data={
        "csrf_token": token, "hospital": "HA", "procedure_code": "HIS-7",
        "item_code": "MR-HEAD"})
    assert added.status_code == 303
    assert {"procedure_code": "HIS-7", "item_code": "MR-HEAD"} in svc.code_maps("HA")
    admin.post("/admin/recognition/code-maps", headers=ORIGIN, data={
        "csrf_token": token, "hospital": "HA", "procedure_code": "HIS-7", "remove": "1"})
    unknown = admin.post("/admin/recognition/code-maps", headers=ORIGIN, data={
        "csrf_token": token, "hospital": "NOPE", "procedure_code": "X", "item_code": "CT-CHEST"})
    assert unknown.status_code == 404 and 'role="alert"' in unknown.text
    assert {"procedure_code": "HIS-7", "item_code": "MR-HEAD"} not in svc.code_maps("HA")


def test_figures_page_counts_what_was_saved(province: Province, admin: TestClient) -> None:
    svc = province.services.recognition
    doctor = province.doctor("HA")
    first = svc.check(doctor, CheckRequest(patient_id="HA-001", item_code="CT-CHEST"))
    second = svc.check(doctor, CheckRequest(patient_id="HA-001", item_code="CT-CHEST"))
    svc.decide(doctor, first.decision_id, "accepted")
    svc.decide(doctor, second.decision_id, "repeat", reason="emergency")
    page = admin.get("/admin/recognition/figures?lang=en")
    assert page.status_code == 200
    assert "Emergency: 1" in page.text
    price = next(p["price_yuan"] for p in svc.prices()
                 if p["item_code"] == "CT-CHEST" and p["level"] == "tertiary")
    assert f"{price:,.2f}" in page.text and "7.000" in page.text
    assert "/api/v1/recognition/savings?format=csv" in page.text
    csv = admin.get("/api/v1/recognition/savings?format=csv")
    assert csv.status_code == 200 and "CT-CHEST" in csv.text
