"""The portal's pages over HTTP (no browser): sign-in through the SMS outbox, what a
resident sees, and attempts to get around the session, CSRF, Origin and policy rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.support import (
    PHONE1,
    PHONE2,
    Portal,
    build,
    latest_code,
    request_access,
)

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.archive.retrieve import RetrieveService

ORIGIN = {"origin": "http://testserver"}


@pytest.fixture
def world(province: Province, tmp_path: Path) -> Portal:  # noqa: F811
    return build(province, tmp_path, slices=6)


@pytest.fixture
def browser(world: Portal) -> Iterator[TestClient]:
    with TestClient(create_app(world.province.services), follow_redirects=False,
                    headers={"user-agent": "Mozilla/5.0 (Linux; Android 10) Mobile"}) as client:
        yield client


def csrf_of(client: TestClient, path: str = "/portal/signin") -> str:
    page = client.get(path)
    found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def sign_in(client: TestClient, world: Portal, phone: str = PHONE1) -> None:
    token = csrf_of(client)
    sent = client.post("/portal/signin/code", data={"phone": phone, "csrf_token": token},
                       headers=ORIGIN)
    assert sent.status_code == 200 and "138****8001" in sent.text
    code = latest_code(world.province.services, phone)
    done = client.post("/portal/signin", data={"phone": phone, "code": code,
                                               "csrf_token": token}, headers=ORIGIN)
    assert done.status_code == 303 and done.headers["location"] == "/portal"
    cookie = done.headers["set-cookie"]
    assert "cloudfilm_session=cfs_" in cookie and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()


def test_phone_at_root_goes_to_portal_and_signin_is_required(browser: TestClient) -> None:
    assert browser.get("/").headers["location"] == "/portal"
    desk = browser.get("/", headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert desk.headers["location"] == "/workstation"
    page = browser.get("/portal")
    assert page.status_code == 303 and page.headers["location"] == "/portal/signin"


def test_sign_in_timeline_study_and_sign_out(browser: TestClient, world: Portal) -> None:
    sign_in(browser, world)
    page = browser.get("/portal")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    # Two hospitals, newest first, in plain Chinese words; R2 (the dependant) included.
    assert "Hospital HB" in page.text and "Hospital HA" in page.text
    assert page.text.index("2025年3月10日") < page.text.index("2024年1月5日")
    assert "胸部CT" in page.text and "正式报告" in page.text
    # The guardian's switcher narrows to one person.
    mine = browser.get(f"/portal?for={world.province.r2}")
    assert mine.text.count('class="study"') == 1
    everyone = browser.get("/portal?for=0")
    assert everyone.text.count('class="study"') == 4
    assert everyone.text.count('<p class="who">Lei Zhao</p>') == 1  # whose study it is
    # Elderly mode: remembered, and every page gets the larger type.
    token = csrf_of(browser, "/portal")
    big = browser.post("/portal/settings", data={"csrf_token": token, "elderly": "1",
                                                 "back": "//evil.example"}, headers=ORIGIN)
    assert big.status_code == 303 and big.headers["location"] == "/portal"
    assert '<body class=" elderly">' in browser.get("/portal").text
    study = browser.get(f"/portal/studies/{world.ct_study}")
    assert study.status_code == 200 and "检查所见" in study.text
    thumb = re.search(r'src="(/portal/thumbs/[^"]+)"', study.text)
    assert thumb and browser.get(thumb.group(1)).content[:2] == b"\xff\xd8"
    pdf = browser.get(f"/portal/reports/{world.report_id}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    view = browser.get(f"/portal/studies/{world.ct_study}/series/{world.ct_series}/view")
    assert view.status_code == 200 and 'max="6"' in view.text
    token = csrf_of(browser, "/portal")
    out = browser.post("/portal/signout", data={"csrf_token": token}, headers=ORIGIN)
    assert out.status_code == 303
    assert browser.get("/portal").status_code == 303


def test_wrong_code_and_rate_limit_say_so_in_chinese(browser: TestClient,
                                                    world: Portal) -> None:
    token = csrf_of(browser)
    browser.post("/portal/signin/code", data={"phone": PHONE1, "csrf_token": token},
                 headers=ORIGIN)
    wrong = browser.post("/portal/signin", data={"phone": PHONE1, "code": "000000",
                                                 "csrf_token": token}, headers=ORIGIN)
    assert wrong.status_code == 401 and "验证码错误或已过期" in wrong.text
    bad = browser.post("/portal/signin/code", data={"phone": "12345", "csrf_token": token},
                       headers=ORIGIN)
    assert bad.status_code == 400 and "请输入11位手机号码" in bad.text
    for _ in range(6):
        last = browser.post("/portal/signin/code", data={"phone": PHONE1, "csrf_token": token},
                            headers=ORIGIN)
    assert last.status_code == 429
    # An hour's window: said in minutes, rounded up (never "3596 seconds").
    assert re.search(r"请 (59|60) 分钟后再试", last.text)
    english = browser.post("/portal/signin/code?lang=en",
                           data={"phone": PHONE1, "csrf_token": token}, headers=ORIGIN)
    assert re.search(r"try again in (59|60) minutes", english.text)


def test_forms_without_csrf_or_from_another_site_are_refused(browser: TestClient,
                                                             world: Portal) -> None:
    csrf_of(browser)
    no_token = browser.post("/portal/signin/code", data={"phone": PHONE1}, headers=ORIGIN)
    assert no_token.status_code == 403
    token = csrf_of(browser)
    foreign = browser.post("/portal/signin/code", data={"phone": PHONE1, "csrf_token": token},
                           headers={"origin": "https://evil.example"})
    assert foreign.status_code == 403
    no_origin = browser.post("/portal/signin/code", data={"phone": PHONE1,
                                                          "csrf_token": token})
    assert no_origin.status_code == 403
    assert browser.get("/portal/signin", headers={"host": "evil.example"}).status_code == 400
    assert world.province.services.sms.outbox(phone=PHONE1, limit=10)[0].template != ""
    # Nothing was sent by the refused requests: only the registration's code.
    assert len(world.province.services.sms.outbox(phone=PHONE1, limit=10)) == 1


def test_cookie_session_reaches_the_api_but_not_cross_site_writes(browser: TestClient,
                                                                  world: Portal) -> None:
    sign_in(browser, world)
    mine = browser.get("/dicomweb/studies")
    assert mine.status_code == 200 and len(mine.json()) == 4
    grant = request_access(world.province)
    forged = browser.post(f"/api/v1/access/grants/{grant}/approve",
                          headers={"origin": "https://evil.example"})
    assert forged.status_code == 403
    assert world.province.services.consent.resident_grants(
        world.province.resident(world.province.r1))[0].status == "requested"


def test_other_residents_studies_and_forged_sessions_are_refused(
        browser: TestClient, world: Portal) -> None:
    p = world.province
    browser.cookies.set("cloudfilm_session", "cfs_" + "A" * 43)
    assert browser.get("/portal").status_code == 303
    sign_in(browser, world)
    # Someone else's study (R2 is a dependant: narrow to R1 via a made-up "for").
    theirs = browser.get(f"/portal/studies/{p.sb2}?for=999999")
    assert theirs.status_code == 200  # "for" outside the family is ignored: R1 acts for R2
    narrowed = browser.get(f"/portal/studies/{p.sb2}?for={p.r1}")
    assert narrowed.status_code == 403 and "无权查看" in narrowed.text
    series, sop = p.uids[p.sb2]
    frame = browser.get(f"/portal/frames/{p.sb2}/{series}/{sop}/1?for={p.r1}")
    assert frame.status_code == 403
    assert browser.get("/portal/studies/1.2.3.4.5").status_code == 403
    assert browser.get("/portal/studies/..%2F..%2Fetc").status_code in (403, 404)


def test_approve_and_revoke_a_request_and_see_who_looked(browser: TestClient,
                                                         world: Portal) -> None:
    p = world.province
    grant = request_access(p)
    sign_in(browser, world)
    inbox = browser.get("/portal/access")
    assert "复诊对比" in inbox.text and "Dr 1" in inbox.text
    token = csrf_of(browser, "/portal/access")
    ok = browser.post(f"/portal/access/{grant}/approve", data={"csrf_token": token},
                      headers=ORIGIN)
    assert ok.status_code == 303
    # The doctor now opens R1's study at the other hospital; the resident sees it.
    p.services.retrieve.metadata(p.sb1, actor=p.doctor)
    log = browser.get("/portal/log")
    assert "Dr 1" in log.text and "Hospital HA" in log.text
    revoked = browser.post(f"/portal/access/{grant}/revoke", data={"csrf_token": token},
                           headers=ORIGIN)
    assert revoked.status_code == 303
    assert p.services.consent.resident_grants(p.resident(p.r1))[0].status == "revoked"


def test_viewer_frames_are_cached_after_the_policy_decides(browser: TestClient,
                                                           world: Portal,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    sign_in(browser, world)
    study = browser.get(f"/portal/studies/{world.ct_study}")
    sops = re.findall(r"/portal/thumbs/[0-9.]+/[0-9.]+/([0-9.]+)", study.text)
    url = f"/portal/frames/{world.ct_study}/{world.ct_series}/{sops[0]}/1?preset=lung&size=512"
    first = browser.get(url)
    assert first.status_code == 200 and first.headers["cache-control"].startswith("private")
    calls = []
    original = RetrieveService._load
    monkeypatch.setattr(RetrieveService, "_load",
                        lambda self, obj: calls.append(obj) or original(self, obj))
    again = browser.get(url)
    assert again.content == first.content and calls == []  # from the disk cache
    bone = browser.get(url.replace("lung", "bone"))
    assert bone.content != first.content and len(calls) == 1


def test_a_new_resident_registers_from_the_sign_in_page(browser: TestClient,
                                                        world: Portal) -> None:
    from tests.integration.access.conftest import NID2

    services = world.province.services
    token = csrf_of(browser)
    browser.post("/portal/signin/code", data={"phone": PHONE2, "csrf_token": token},
                 headers=ORIGIN)
    first = latest_code(services, PHONE2)
    step = browser.post("/portal/signin", data={"phone": PHONE2, "code": first,
                                                "csrf_token": token}, headers=ORIGIN)
    assert step.status_code == 200 and "身份证号" in step.text
    second = latest_code(services, PHONE2)
    assert second != first or len(services.sms.outbox(phone=PHONE2, limit=5)) == 2
    wrong = browser.post("/portal/register", data={
        "phone": PHONE2, "code": second, "name": "王小东", "national_id": NID2,
        "csrf_token": token}, headers=ORIGIN)
    assert wrong.status_code == 400 and "不一致" in wrong.text  # not Zhao Lei's name
    browser.post("/portal/signin/code", data={"phone": PHONE2, "csrf_token": token},
                 headers=ORIGIN)
    no_factor = browser.post("/portal/register", data={
        "phone": PHONE2, "code": latest_code(services, PHONE2), "name": "Zhao Lei",
        "national_id": NID2, "csrf_token": token}, headers=ORIGIN)
    assert no_factor.status_code == 400  # right name and ID, but no second factor
    slip = services.accounts.issue_activation_code(NID2, by=world.province.hospital("HB"))
    browser.post("/portal/signin/code", data={"phone": PHONE2, "csrf_token": token},
                 headers=ORIGIN)
    done = browser.post("/portal/register", data={
        "phone": PHONE2, "code": latest_code(services, PHONE2), "name": "Zhao Lei",
        "national_id": NID2, "activation_code": slip.code, "csrf_token": token},
        headers=ORIGIN)
    assert done.status_code == 303 and "cloudfilm_session=cfs_" in done.headers["set-cookie"]
    page = browser.get("/portal")
    assert page.text.count('class="study"') == 1  # only Zhao Lei's own study


def test_a_family_timeline_is_in_each_members_access_log(world: Portal) -> None:
    """Issue 11, finding 5, for the portal: a page showing two family members' studies
    leaves one record per member, each listing all of that member's studies."""
    from tests.integration.access.test_access_log import _searches
    from tests.integration.access.test_policy_matrix import audit_rows

    from cloudfilm.services.access.actor import Actor

    p = world.province
    family = Actor(kind="resident", subject="account:family", account_id=1,
                   resident_ids=frozenset({p.r1, p.r2}), display="family")
    page = p.services.timeline.page(family)
    shown: dict[int, set[str]] = {}
    for study in page.studies:
        assert study.resident_id is not None
        shown.setdefault(study.resident_id, set()).add(study.study_instance_uid)
    assert set(shown) == {p.r1, p.r2}
    logged = _searches(audit_rows(p.db_url, 5))
    assert {rid: set(uids) for rid, uids in logged.items()} == shown


def test_the_resident_refuses_research_and_ai_use_on_a_page(browser: TestClient,
                                                            world: Portal) -> None:
    p = world.province
    sign_in(browser, world)
    page = browser.get("/portal/research")
    assert page.status_code == 200 and "科研" in page.text and "已允许" in page.text
    token = csrf_of(browser, "/portal/research")
    assert page.text.count('name="resident_id"') == 2  # R1 and the family member R2
    # a resident R1 may not act for is refused
    other = browser.post("/portal/research", data={"csrf_token": token, "refused": "1",
                                                   "resident_id": str(10**9)}, headers=ORIGIN)
    assert other.status_code == 403
    done = browser.post("/portal/research", data={"csrf_token": token, "refused": "1",
                                                  "resident_id": str(p.r1)}, headers=ORIGIN)
    assert done.status_code == 303
    assert p.services.research.refusal(p.resident(p.r1)) is True
    assert p.services.research.refusal(p.resident(p.r2)) is False  # only the one chosen
    assert "已拒绝" in browser.get("/portal/research?done=refused").text
    assert browser.post("/portal/research", data={"refused": "1", "resident_id": str(p.r1)},
                        headers=ORIGIN).status_code == 403  # no CSRF token
