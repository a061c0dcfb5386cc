"""The doctor's workstation in a real desktop browser: Debian's headless Chromium
(Playwright) at 1440x900. Staff sign-in; a patient of another hospital found by national ID;
the locked rows; access requested by SMS and confirmed with the code read from the SMS
outbox; the study then opens (its viewer link); the duplicate-exam prompt; break-glass
needs a reason; the HIS launch URL; the session-timeout warning. axe-core (from the npm
build) on every page: no serious or critical violations. Screenshots are saved under
tests/artifacts/workstation/ (git-ignored)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.ws_support import NID1, NID2, PASSWORD, PHONE1, Desk, build, latest_code
from tests.interop.chromium import DESK, base_of, browser, page_of, staff_sign_in  # noqa: F401
from tests.interop.chromium import check_page as check
from tests.interop.test_dicomweb_client import server_url  # noqa: F401

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

PAGES = "workstation"


@pytest.fixture
def desk(province: Province, tmp_path: Path) -> Desk:  # noqa: F811
    return build(province, tmp_path)


@pytest.fixture
def base(desk: Desk, server_url: str) -> str:  # noqa: F811
    return base_of(server_url)


@pytest.fixture
def screen(browser: Browser) -> Iterator[tuple[Page, list[str]]]:  # noqa: F811
    with page_of(browser, "") as opened:
        yield opened


def check_page(page: Page, base: str, name: str) -> None:
    check(page, base, PAGES, name)


def sign_in(page: Page, base: str, user: str = "dr.a") -> None:
    page.goto(f"{base}/workstation")
    assert "/workstation/signin" in page.url
    check_page(page, base, "01-signin")
    staff_sign_in(page, base, user, PASSWORD)


def open_patient(page: Page, base: str, national_id: str, shot: str = "") -> None:
    page.get_by_label("身份证号、本院患者ID或姓名").fill(national_id)
    page.get_by_role("button", name="查找", exact=True).click()
    page.wait_for_url(f"{base}/workstation?q=*")
    if shot:
        check_page(page, base, shot)
    page.get_by_role("link", name="打开", exact=True).first.click()
    page.wait_for_url(f"{base}/workstation/patients/*")


def test_find_request_by_sms_and_open_the_study(screen: tuple[Page, list[str]], base: str,
                                                desk: Desk) -> None:
    page, errors = screen
    p = desk.province
    sign_in(page, base)
    check_page(page, base, "02-find")
    open_patient(page, base, NID1, "03-results")
    # HB's studies are locked rows: no UID, no report, a "request access".
    locked = page.locator(".tl-row.locked")
    assert locked.count() == 2
    assert desk.recent_ct not in page.content()
    check_page(page, base, "04-patient-locked")
    # The duplicate-exam prompt before any grant: the hospital and days, nothing more.
    page.get_by_label("拟开检查").select_option("CT-CHEST")
    page.get_by_role("button", name="核查近期同类检查（互认）").click()
    page.get_by_text("10 天前").wait_for()
    assert "/workstation/viewer" not in page.locator("#prompt").inner_html()
    check_page(page, base, "05-prompt-before-grant")
    # Ask by SMS; the patient reads the code from their phone (the outbox here).
    page.get_by_label("调阅用途（患者可见）").fill("复诊对比")
    page.get_by_role("button", name="发送申请").click()
    page.get_by_label("患者读出的验证码").wait_for()
    check_page(page, base, "06-code")
    page.get_by_label("患者读出的验证码").fill(latest_code(p.services, PHONE1))
    page.get_by_role("button", name="确认", exact=True).click()
    page.get_by_text("授权成功").wait_for()
    assert page.locator(".tl-row.locked").count() == 0
    # The recent CT opens beside its report (htmx), with its viewer link.
    page.locator(f'a[href*="study={desk.recent_ct}"]').first.click()
    page.wait_for_url(f"**study={desk.recent_ct}")
    page.get_by_text("右肺上叶磨玻璃结节").first.wait_for()
    href = page.locator("#open-viewer").get_attribute("href")
    assert href == f"/workstation/viewer?study={desk.recent_ct}"
    compare = page.locator(".compare-link").evaluate_all(
        "els => els.map(e => e.getAttribute('href'))")
    assert f"/workstation/viewer?study={desk.recent_ct}&prior={p.sa1}" in compare
    check_page(page, base, "07-granted-study")
    page.goto(f"{base}/workstation/requests")
    page.get_by_text("复诊对比").wait_for()
    check_page(page, base, "08-requests")
    assert errors == [], errors


def test_break_glass_needs_a_reason_launch_and_timeout(
        screen: tuple[Page, list[str]], base: str, desk: Desk,
        browser: Browser) -> None:  # noqa: F811
    page, errors = screen
    p = desk.province
    sign_in(page, base)
    open_patient(page, base, NID2)
    check_page(page, base, "09-other-hospital-patient")
    page.get_by_text("紧急调阅（破窗）").click()
    reason = page.get_by_label("理由（必填，事后复核）")
    before = page.url
    page.get_by_role("button", name="开通紧急调阅").click()
    assert page.url == before and reason.evaluate("e => !e.validity.valid")
    reason.fill("急诊")  # shorter than 10: the browser refuses, and so would the server
    page.get_by_role("button", name="开通紧急调阅").click()
    assert page.url == before and reason.evaluate("e => !e.validity.valid")
    reason.fill("患者昏迷，急诊抢救需要既往影像")
    page.get_by_role("button", name="开通紧急调阅").click()
    page.get_by_text("紧急调阅已开通").wait_for()
    assert page.locator(".tl-row.locked").count() == 0
    check_page(page, base, "10-break-glass")
    # The HIS launch URL opens the patient with the study chosen.
    page.goto(f"{base}/workstation/launch?patient={NID1}&study={p.sa1}")
    page.wait_for_url(f"**/workstation/patients/*study={p.sa1}")
    assert page.locator("#open-viewer").get_attribute("href") == \
        f"/workstation/viewer?study={p.sa1}"
    check_page(page, base, "11-launch")
    # The one-button launch: the HIS mints with HA's credential for dr.a; in a browser where
    # nobody is signed in the link signs dr.a in and opens the study; used, it opens nothing
    # in another browser.
    credential = p.services.credentials.issue("HA", label="his").token
    minted = httpx.post(f"{base}/api/v1/workstation/launch-tokens", json={
        "patient": NID1, "doctor": "dr.a", "study": p.sa1},
        headers={"authorization": f"Bearer {credential}"})
    assert minted.status_code == 201, minted.text
    link = base + minted.json()["url"]
    with page_of(browser, base) as (his, his_errors):
        his.goto(link)
        his.wait_for_url(f"**/workstation/patients/*study={p.sa1}")
        assert "李医生" in his.locator("header").inner_text()
        check_page(his, base, "11c-launch-token")
        assert his_errors == [], his_errors
    with page_of(browser, base) as (late, _):
        answer = late.goto(link)
        assert answer is not None and answer.status == 404
        assert late.get_by_label("密码").count() == 0
        late.get_by_text("此HIS链接已使用或已过期").wait_for()
        check_page(late, base, "11d-launch-token-used")
    # On a tablet (1024x768, landscape) the same page wraps to two columns, no sideways scroll.
    page.set_viewport_size({"width": 1024, "height": 768})
    check_page(page, base, "11b-tablet")
    page.set_viewport_size(DESK["viewport"])
    # The session-timeout warning two minutes before the end; "stay signed in" renews.
    page.context.add_cookies([{"name": "cloudfilm_ws_expires", "value": str(int(
        time.time()) + 120), "url": base}])
    page.reload()
    dialog = page.get_by_role("alertdialog")
    dialog.wait_for()
    check_page(page, base, "12-timeout-warning")
    page.get_by_role("button", name="保持登录").click()
    dialog.wait_for(state="hidden")
    page.reload()
    page.wait_for_timeout(1500)
    assert page.get_by_role("alertdialog").is_hidden()
    assert errors == [], errors
