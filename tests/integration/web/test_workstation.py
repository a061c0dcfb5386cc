"""The doctor's workstation over HTTP, on both databases: staff sign-in (safe ``next=``),
finding patients only as the rules allow, the patient view with locked rows, the three ways
to consent and break-glass, reports beside the images, the duplicate-exam prompt, the HIS
launch; and attempts to get around them (another hospital, guessed references and UIDs,
expired grants, open redirects, CSRF and Origin)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.ws_support import (
    DESK,
    NID1,
    NID2,
    ORIGIN,
    PHONE1,
    Desk,
    build,
    csrf_of,
    latest_code,
    ref_of,
    sign_in,
)

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.interfaces.web.security import SESSION_COOKIE
from cloudfilm.interfaces.web.workstation import safe_next
from cloudfilm.services.access.actor import LOCAL_OPERATOR


@pytest.fixture
def desk(province: Province, tmp_path: Path) -> Desk:  # noqa: F811
    return build(province, tmp_path)


@pytest.fixture
def browser(desk: Desk) -> Iterator[TestClient]:
    with TestClient(create_app(desk.province.services), follow_redirects=False,
                    headers=DESK) as client:
        yield client


def audit_actions(db_url: str) -> list[tuple[str, int | None, str]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(text(
                "SELECT action, resident_id, outcome FROM audit_event ORDER BY seq"))]
    finally:
        engine.dispose()


def find(client: TestClient, query: str) -> str:
    page = client.get("/workstation", params={"q": query})
    assert page.status_code == 200, page.text[:500]
    return page.text


def test_desktop_root_goes_to_the_workstation_and_signin_is_required(
        browser: TestClient) -> None:
    assert browser.get("/").headers["location"] == "/workstation"
    phone = browser.get("/", headers={"user-agent": "Mozilla/5.0 (iPhone) Mobile"})
    assert phone.headers["location"] == "/portal"
    page = browser.get("/workstation/requests")
    assert page.status_code == 303
    assert page.headers["location"] == "/workstation/signin?next=%2Fworkstation%2Frequests"


def test_sign_in_next_sign_out_and_lockout_words(browser: TestClient, desk: Desk) -> None:
    wrong = sign_in(browser, password="nope-nope-nope")
    assert wrong.status_code == 401 and "用户名或密码不正确" in wrong.text
    done = sign_in(browser, next_="/workstation/requests")
    assert done.status_code == 303 and done.headers["location"] == "/workstation/requests"
    cookies = done.headers.get_list("set-cookie")
    assert any(c.startswith("cloudfilm_session=cfs_") and "HttpOnly" in c for c in cookies)
    assert any(c.startswith("cloudfilm_ws_expires=") for c in cookies)
    home = browser.get("/workstation")
    assert home.status_code == 200 and "李医生" in home.text and "Hospital HA" in home.text
    assert 'data-expires="' in home.text
    renewed = browser.post("/workstation/session/renew",
                           headers={**ORIGIN, "x-csrf-token": csrf_of(browser)})
    assert renewed.status_code == 200 and renewed.json()["expires"] > 0
    assert browser.get("/workstation").status_code == 200  # the new session works
    out = browser.post("/workstation/signout", data={"csrf_token": csrf_of(browser)},
                       headers=ORIGIN)
    assert out.status_code == 303
    assert browser.get("/workstation").status_code == 303
    # Slowed down after 5 failures, in plain words with the wait.
    # (Each try waits twice as long as the last: on a loaded machine an early wait may pass
    # before the next try, so keep trying until one is told to wait.)
    for _ in range(10):
        last = sign_in(browser, user="dr.b", password="wrong-password-x")
        if last.status_code == 429:
            break
    assert last.status_code == 429 and re.search(r"请 \d+ 秒后再试", last.text), last.text[:800]


def test_admins_go_to_the_dashboard_and_next_is_never_an_open_redirect(
        browser: TestClient) -> None:
    done = sign_in(browser, user="official")
    assert done.status_code == 303 and done.headers["location"] == "/dashboard"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example",
                 "/workstation/../..//evil", "/portal", "javascript:alert(1)",
                 "/workstation\r\nLocation: https://evil", "/dashboard@evil.example"):
        assert safe_next(evil) in (None, "/dashboard@evil.example"), evil
        browser.cookies.clear()
        answer = sign_in(browser, next_=evil)
        assert answer.status_code == 303
        assert answer.headers["location"] in ("/workstation", "/dashboard@evil.example")
        assert not answer.headers["location"].startswith("//")
    assert safe_next("/admin/recognition?x=1") == "/admin/recognition?x=1"
    assert safe_next("/dashboard") == "/dashboard"


def test_csrf_and_origin_are_required(browser: TestClient) -> None:
    token = csrf_of(browser)
    no_origin = browser.post("/workstation/signin", data={
        "username": "dr.a", "password": "x" * 12, "csrf_token": token})
    assert no_origin.status_code == 403
    other = browser.post("/workstation/signin", data={
        "username": "dr.a", "password": "x" * 12, "csrf_token": token},
        headers={"origin": "https://evil.example"})
    assert other.status_code == 403
    no_token = browser.post("/workstation/signin", data={
        "username": "dr.a", "password": "x" * 12, "csrf_token": "forged"}, headers=ORIGIN)
    assert no_token.status_code == 403


def test_search_stays_in_the_own_hospital_and_national_id_is_minimal_and_audited(
        browser: TestClient, desk: Desk) -> None:
    sign_in(browser)
    # Name (characters or pinyin) and local ID: only HA's patients. R2 is only at HB.
    for query in ("Zhao", "zhaolei", "Lei", NID2[:10]):  # a partial ID is no look-up
        page = find(browser, query)
        assert "未找到" in page and "/workstation/patients/" not in page, query
    wang = find(browser, "wang")
    assert "/workstation/patients/" in wang and "XiaoDong" in wang
    # Another hospital's local ID of R2 (HB uses the national ID as PatientID) is not a
    # name search across hospitals either.
    assert "未找到" in find(browser, "P-HB-404")
    # A wrong check digit is refused in words; a valid national ID finds R2 (masked name,
    # locked studies elsewhere, no UIDs, no hospital name).
    bad = NID2[:17] + ("0" if NID2[17] != "0" else "1")
    assert "校验位" in find(browser, bad)
    page = find(browser, NID2)
    assert "Z*" in page or "Zhao" not in page
    assert "1 项已锁定" in page
    ref = ref_of(page)
    view = browser.get(f"/workstation/patients/{ref}")
    assert view.status_code == 200
    assert desk.province.sb2 not in view.text and "Hospital HB" not in view.text
    assert "三级医院" in view.text and "申请查看" in view.text
    rows = audit_actions(desk.province.db_url)
    assert ("workstation.lookup", desk.province.r2, "allowed") in rows


def test_guessed_references_and_uids_reveal_nothing(browser: TestClient, desk: Desk) -> None:
    p = desk.province
    sign_in(browser)
    for ref in (f"r{p.r2}-" + "0" * 24, f"r{p.r2}", f"p1-{'a' * 24}", "../../etc"):
        assert browser.get(f"/workstation/patients/{ref}").status_code in (403, 404)
    # dr.b's reference of R1 does not work for dr.a.
    with TestClient(create_app(p.services), follow_redirects=False, headers=DESK) as other:
        sign_in(other, user="dr.b")
        ref_b = ref_of(find(other, NID1))
    assert browser.get(f"/workstation/patients/{ref_b}").status_code == 404
    ref = ref_of(find(browser, NID1))
    # Another hospital's study by UID: the pane refuses it, the report page refuses too.
    assert browser.get(f"/workstation/patients/{ref}/studies/{p.sb1}",
                       headers={"hx-request": "true"}).status_code == 403
    assert browser.get(f"/workstation/reports/{desk.recent_report}").status_code == 403


def test_patient_view_sms_grant_opens_the_study_with_its_report(
        browser: TestClient, desk: Desk) -> None:
    p = desk.province
    sign_in(browser)
    ref = ref_of(find(browser, NID1))
    view = browser.get(f"/workstation/patients/{ref}")
    # Own study open with the viewer link; HB's two studies locked, no UID shown.
    assert f'/workstation/viewer?study={p.sa1}' in view.text
    assert p.sb1 not in view.text and desk.recent_ct not in view.text
    token = csrf_of(browser, f"/workstation/patients/{ref}")
    missing = browser.post(f"/workstation/patients/{ref}/access", data={
        "mode": "sms", "purpose": "", "csrf_token": token}, headers=ORIGIN)
    assert missing.status_code == 400
    asked = browser.post(f"/workstation/patients/{ref}/access", data={
        "mode": "sms", "purpose": "复诊对比", "hours": "24", "csrf_token": token},
        headers=ORIGIN)
    assert asked.status_code == 303
    grant = int(re.search(r"grant=(\d+)", asked.headers["location"]).group(1))  # type: ignore[union-attr]
    waiting = browser.get(f"/workstation/patients/{ref}")
    assert f"/workstation/grants/{grant}/code" in waiting.text
    wrong = browser.post(f"/workstation/grants/{grant}/code", data={
        "code": "000000", "ref": ref, "csrf_token": token}, headers=ORIGIN)
    assert wrong.status_code == 400
    code = latest_code(p.services, PHONE1)
    ok = browser.post(f"/workstation/grants/{grant}/code", data={
        "code": code, "ref": ref, "csrf_token": token}, headers=ORIGIN)
    assert ok.status_code == 303
    opened = browser.get(f"/workstation/patients/{ref}?study={desk.recent_ct}")
    assert f"/workstation/viewer?study={desk.recent_ct}" in opened.text
    assert f"&amp;prior={p.sa1}" in opened.text  # compare with the own prior
    assert "右肺上叶磨玻璃结节" in opened.text  # the report beside the images
    assert "有效" in opened.text  # the active grant with its expiry
    pane = browser.get(f"/workstation/patients/{ref}/studies/{desk.recent_ct}",
                       headers={"hx-request": "true"})
    assert pane.status_code == 200 and "<html" not in pane.text
    report = browser.get(f"/workstation/reports/{desk.recent_report}")
    assert report.status_code == 200
    history = browser.get("/workstation/requests")
    assert "复诊对比" in history.text and "短信验证码" in history.text


def test_expired_grant_locks_again(browser: TestClient, desk: Desk) -> None:
    p = desk.province
    sign_in(browser)
    ref = ref_of(find(browser, NID1))
    engine = create_engine(p.db_url)
    try:
        with engine.connect() as conn:
            doctor_id = conn.execute(text(
                "SELECT id FROM account WHERE username = 'dr.a'")).scalar_one()
    finally:
        engine.dispose()
    from cloudfilm.services.access.actor import Actor

    dr_a = Actor(kind="doctor", subject=f"account:{doctor_id}", hospital_id=p.ha,
                 hospital_code="HA", account_id=doctor_id)
    p.grant(dr_a, p.r1, expired=True)
    view = browser.get(f"/workstation/patients/{ref}")
    assert desk.recent_ct not in view.text and "申请查看" in view.text


def test_portal_request_live_status_in_person_and_break_glass(
        browser: TestClient, desk: Desk) -> None:
    p = desk.province
    sign_in(browser)
    ref = ref_of(find(browser, NID1))
    token = csrf_of(browser, f"/workstation/patients/{ref}")
    asked = browser.post(f"/workstation/patients/{ref}/access", data={
        "mode": "portal", "purpose": "会诊", "csrf_token": token}, headers=ORIGIN)
    grant = int(re.search(r"grant=(\d+)", asked.headers["location"]).group(1))  # type: ignore[union-attr]
    polling = browser.get(f"/workstation/patients/{ref}")
    assert f'hx-get="/workstation/grants/{grant}/status?ref={ref}"' in polling.text
    still = browser.get(f"/workstation/grants/{grant}/status?ref={ref}",
                        headers={"hx-request": "true"})
    assert still.status_code == 200 and "等待" in still.text
    p.services.consent.approve(p.resident(p.r1), grant)
    done = browser.get(f"/workstation/grants/{grant}/status?ref={ref}",
                       headers={"hx-request": "true"})
    assert done.status_code == 204 and "notice=active" in done.headers["hx-redirect"]
    # Another doctor's grant id is not found.
    with TestClient(create_app(p.services), follow_redirects=False, headers=DESK) as other:
        sign_in(other, user="dr.b")
        assert other.get(f"/workstation/grants/{grant}/status").status_code == 404
    browser.post(f"/workstation/grants/{grant}/withdraw",
                 data={"ref": ref, "csrf_token": token}, headers=ORIGIN)
    # In person: the ID card number must match.
    wrong = browser.post(f"/workstation/patients/{ref}/access", data={
        "mode": "in_person", "purpose": "门诊", "id_card": NID2, "witness": "护士甲",
        "csrf_token": token}, headers=ORIGIN)
    assert wrong.status_code == 403 and "不一致" in wrong.text
    # Break-glass needs a reason of 10 characters.
    short = browser.post(f"/workstation/patients/{ref}/access", data={
        "mode": "break_glass", "purpose": "急", "csrf_token": token}, headers=ORIGIN)
    assert short.status_code == 400 and "10" in short.text
    glass = browser.post(f"/workstation/patients/{ref}/access", data={
        "mode": "break_glass", "purpose": "患者昏迷急诊抢救需要既往影像", "csrf_token": token},
        headers=ORIGIN)
    assert glass.status_code == 303
    assert desk.recent_ct in browser.get(f"/workstation/patients/{ref}").text
    assert ("grant.break_glass", p.r1, "success") in audit_actions(p.db_url)


def test_duplicate_exam_prompt_and_decision(browser: TestClient, desk: Desk) -> None:
    sign_in(browser)
    ref = ref_of(find(browser, NID1))
    token = csrf_of(browser, f"/workstation/patients/{ref}")
    prompt = browser.post(f"/workstation/patients/{ref}/order", data={
        "item": "CT-CHEST", "csrf_token": token}, headers={**ORIGIN, "hx-request": "true"})
    assert prompt.status_code == 200, prompt.text
    assert "10 天前" in prompt.text and "Hospital HB" in prompt.text
    # Without a grant: no UID, no viewer link, no report text.
    assert desk.recent_ct not in prompt.text and "/workstation/viewer" not in prompt.text
    assert "磨玻璃" not in prompt.text
    decision = re.search(r"/workstation/recognition/([0-9a-f-]{36})", prompt.text).group(1)  # type: ignore[union-attr]
    no_reason = browser.post(f"/workstation/recognition/{decision}", data={
        "decision": "repeat", "reason": "", "csrf_token": token}, headers=ORIGIN)
    assert no_reason.status_code == 400
    done = browser.post(f"/workstation/recognition/{decision}", data={
        "decision": "repeat", "reason": "condition_changed", "csrf_token": token},
        headers=ORIGIN)
    assert done.status_code == 200 and "病情变化" in done.text
    again = browser.post(f"/workstation/recognition/{decision}", data={
        "decision": "accepted", "csrf_token": token}, headers=ORIGIN)
    assert again.status_code == 409
    # The CDS Hooks card's link: consent needed, not the viewer.
    landing = browser.get(f"/workstation/recognition/{decision}?study={desk.recent_ct}")
    assert landing.status_code == 200 and "同意" in landing.text


def test_launch_from_the_his_by_url_and_by_token(browser: TestClient, desk: Desk) -> None:
    p = desk.province
    direct = browser.get(f"/workstation/launch?patient={NID1}&study={p.sa1}")
    assert direct.status_code == 303 and direct.headers["location"].startswith(
        "/workstation/signin?next=%2Fworkstation%2Flaunch")
    sign_in(browser)
    opened = browser.get(f"/workstation/launch?patient={NID1}&study={p.sa1}")
    assert opened.status_code == 303 and f"study={p.sa1}" in opened.headers["location"]
    assert browser.get(opened.headers["location"]).status_code == 200
    with TestClient(create_app(p.services), follow_redirects=False) as api:
        ha = p.services.credentials.issue("HA", label="his").token
        hb = p.services.credentials.issue("HB", label="his").token
        mint = api.post("/api/v1/workstation/launch-tokens", json={
            "patient": NID1, "doctor": "dr.a", "item": "CT-CHEST"},
            headers={"authorization": f"Bearer {ha}"})
        assert mint.status_code == 201, mint.text
        token = mint.json()["token"]
        # HB cannot mint for HA's doctor, nor for R2 through HA, nor HA for R2 (not HA's).
        assert api.post("/api/v1/workstation/launch-tokens", json={
            "patient": NID1, "doctor": "dr.a"},
            headers={"authorization": f"Bearer {hb}"}).status_code == 404
        assert api.post("/api/v1/workstation/launch-tokens", json={
            "patient": NID2, "doctor": "dr.a"},
            headers={"authorization": f"Bearer {ha}"}).status_code == 404
        assert api.post("/api/v1/workstation/launch-tokens", json={
            "patient": NID1, "doctor": "dr.a", "study": p.sb1},
            headers={"authorization": f"Bearer {ha}"}).status_code == 404
        stored = create_engine(p.db_url)
        try:
            with stored.connect() as conn:
                hashes = conn.execute(text("SELECT token_hash FROM workstation_launch")
                                      ).scalars().all()
        finally:
            stored.dispose()
        assert token not in hashes and len(hashes) == 1
    # Another doctor cannot use it (and does not use it up).
    with TestClient(create_app(p.services), follow_redirects=False, headers=DESK) as other:
        sign_in(other, user="dr.b")
        assert other.get(f"/workstation/launch?token={token}").status_code == 403
    used = browser.get(f"/workstation/launch?token={token}")
    assert used.status_code == 303 and "item=CT-CHEST" in used.headers["location"]
    page = browser.get(used.headers["location"])
    assert 'hx-trigger="submit, load"' in page.text
    assert browser.get(f"/workstation/launch?token={token}").status_code == 404  # reused
    # Expired.
    with TestClient(create_app(p.services), follow_redirects=False) as api:
        late = api.post("/api/v1/workstation/launch-tokens", json={
            "patient": NID1, "doctor": "dr.a"},
            headers={"authorization": f"Bearer {ha}"}).json()["token"]
    engine = create_engine(p.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE workstation_launch SET expires_at = created_at "
                              "WHERE used_at IS NULL"))
    finally:
        engine.dispose()
    assert browser.get(f"/workstation/launch?token={late}").status_code == 404


def test_a_launch_token_signs_its_own_doctor_in_once_and_resists_abuse(
        desk: Desk) -> None:
    """IHE Invoke Image Display with one button: the HIS mints with its hospital's
    credential, for one of its own doctors; the link signs that doctor in where nobody is
    signed in, once, within 5 minutes. Everything else fails."""
    p = desk.province
    app = create_app(p.services)
    ha = p.services.credentials.issue("HA", label="his").token
    hb = p.services.credentials.issue("HB", label="his").token

    def mint(credential: str, **body: str) -> Any:
        with TestClient(app, follow_redirects=False) as api:
            return api.post("/api/v1/workstation/launch-tokens", json={
                "patient": NID1, "doctor": "dr.a", **body},
                headers={"authorization": f"Bearer {credential}"})

    # Another hospital's credential for HA's doctor, HA's credential for HB's doctor: no.
    assert mint(hb).status_code == 404
    assert mint(ha, doctor="dr.b").status_code == 404
    assert mint(ha, doctor="official").status_code == 404  # not a doctor of HA
    minted = mint(ha, study=p.sa1)
    assert minted.status_code == 201, minted.text
    url = minted.json()["url"]
    life = datetime.fromisoformat(minted.json()["expires_at"]) - datetime.now(UTC)
    assert timedelta(minutes=4) < life <= timedelta(minutes=5)

    # A browser where nobody is signed in: the link signs dr.a in and opens the study.
    with TestClient(app, follow_redirects=False, headers=DESK) as first:
        opened = first.get(url)
        assert opened.status_code == 303, opened.text
        assert opened.headers["location"].startswith("/workstation/patients/r")
        assert f"study={p.sa1}" in opened.headers["location"]
        assert SESSION_COOKIE in opened.cookies
        page = first.get(opened.headers["location"])
        assert page.status_code == 200 and "李医生" in page.text
        assert first.get("/workstation").status_code == 200  # a normal session
        assert first.get(url).status_code == 404  # used
    # The same link in another browser after use: refused, nobody signed in.
    with TestClient(app, follow_redirects=False, headers=DESK) as second:
        again = second.get(url)
        assert again.status_code == 404 and SESSION_COOKIE not in again.cookies
        assert "此HIS链接已使用或已过期" in again.text
        assert second.get("/workstation").status_code == 303
        assert second.get("/workstation/launch?token=cfl_" + "x" * 43).status_code == 404

    # Another doctor signed in here (a shared desk): refused, and not used up.
    spare = mint(ha).json()["url"]
    with TestClient(app, follow_redirects=False, headers=DESK) as shared:
        sign_in(shared, user="dr.b")
        refused = shared.get(spare)
        assert refused.status_code == 403 and "属于另一位医生" in refused.text
        assert "陈医生" in shared.get("/workstation").text  # still dr.b
    with TestClient(app, follow_redirects=False, headers=DESK) as third:
        assert third.get(spare).status_code == 303

    # Expired (past its 5 minutes): refused.
    late = mint(ha).json()["url"]
    engine = create_engine(p.db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE workstation_launch SET expires_at = created_at "
                              "WHERE used_at IS NULL"))
    finally:
        engine.dispose()
    with TestClient(app, follow_redirects=False, headers=DESK) as fourth:
        refused = fourth.get(late)
        assert refused.status_code == 404 and SESSION_COOKIE not in refused.cookies

    # The doctor deactivated after the HIS minted: no session, the link spent.
    gone = mint(ha).json()["url"]
    [dr_a] = [a for a in p.services.accounts.list_accounts(by=LOCAL_OPERATOR)
              if a.username == "dr.a"]
    p.services.accounts.set_active(dr_a.id, False, by=LOCAL_OPERATOR)
    with TestClient(app, follow_redirects=False, headers=DESK) as fifth:
        refused = fifth.get(gone)
        assert refused.status_code == 404 and SESSION_COOKIE not in refused.cookies
    p.services.accounts.set_active(dr_a.id, True, by=LOCAL_OPERATOR)
    with TestClient(app, follow_redirects=False, headers=DESK) as sixth:
        assert sixth.get(gone).status_code == 404

    # Audited: the launched sign-ins (as dr.a, naming the resident) and every refusal.
    rows = audit_actions(p.db_url)
    assert rows.count(("workstation.launch", p.r1, "success")) == 2
    denied = [r for r in rows if r[0] == "workstation.launch" and r[2] == "denied"]
    assert len(denied) >= 6
    engine = create_engine(p.db_url)
    try:
        with engine.connect() as conn:
            launched = conn.execute(text(
                "SELECT actor_display FROM audit_event WHERE action = 'sign_in' "
                "AND detail LIKE '%launch%'")).scalars().all()
    finally:
        engine.dispose()
    assert launched == ["李医生", "李医生"]


def test_english_pages_and_a_local_id_launch(browser: TestClient, desk: Desk) -> None:
    p = desk.province
    page = browser.get("/workstation/signin?lang=en")
    assert "Staff sign-in" in page.text and "s workstation" in page.text
    sign_in(browser)
    home = browser.get("/workstation", params={"q": "wang"})
    assert "Find a patient" in home.text and "National ID" in home.text
    # HA's local PatientID (the national ID here) opens HA's record; an unknown one searches.
    opened = browser.get(f"/workstation/launch?patient={NID1}")
    assert opened.status_code == 303 and "/workstation/patients/r" in opened.headers["location"]
    unknown = browser.get("/workstation/launch?patient=NO-SUCH-ID")
    assert unknown.status_code == 303 and unknown.headers["location"].startswith(
        "/workstation?q=")
    error = browser.get(f"/workstation/patients/r{p.r2}-{'0' * 24}")
    assert error.status_code == 404 and 'href="/workstation"' in error.text
