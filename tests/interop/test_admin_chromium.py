"""The operators' ``/admin`` pages of the recognition rules in a real desk browser: Debian's
headless Chromium (Playwright) at 1440x900. An administrator edits a catalogue item, maps
an unmapped body part in one click (htmx), sees the history and the figures; axe-core
(from the npm build) on every page, no console errors. Screenshots are saved under
tests/artifacts/admin/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page
from tests.integration.recognition.conftest import (  # noqa: F401
    NID1,
    Province,
    province,
    settings,
)
from tests.interop.chromium import base_of, browser, check_page, page_of  # noqa: F401
from tests.interop.test_dicomweb_client import server_url  # noqa: F401

from cloudfilm.services.access.accounts import NewAccount
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR
from cloudfilm.services.recognition.service import CheckRequest

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

PAGES = "admin"


@pytest.fixture
def base(province: Province, server_url: str) -> str:  # noqa: F811
    return base_of(server_url)


@pytest.fixture
def desk(browser: Browser, base: str,  # noqa: F811
         province: Province) -> Iterator[tuple[Page, list[str]]]:  # noqa: F811
    services = province.services
    services.accounts.create_account(NewAccount(
        kind="admin", username="commission.admin", password="correct horse battery",
        display_name="省卫健委管理员"), by=LOCAL_OPERATOR)
    token = services.accounts.sign_in_password("commission.admin", "correct horse battery",
                                               requester="test").token
    with page_of(browser, base, token=token) as opened:
        yield opened


def test_admin_edits_maps_and_reads_the_figures(desk: tuple[Page, list[str]], base: str,
                                                province: Province) -> None:  # noqa: F811
    page, errors = desk
    svc = province.services.recognition
    doctor = province.doctor("HA")
    # Something to map, and something to count.
    province.ingest("HB", NID1, 4, body="TORSO_UPPER", description="", modality="CT")
    for decision in ("accepted", "repeat"):
        done = svc.check(doctor, CheckRequest(patient_id="HA-001", item_code="CT-CHEST",
                                              department="呼吸内科"))
        svc.decide(doctor, done.decision_id, decision,
                   reason="" if decision == "accepted" else "condition_changed")

    page.goto(f"{base}/admin")
    page.get_by_role("heading", name="概览").wait_for()
    check_page(page, base, PAGES, "01-index")

    page.get_by_role("link", name="互认目录").first.click()
    page.get_by_role("heading", name="互认项目目录").wait_for()
    assert page.locator("tbody tr").count() == len(svc.items())
    check_page(page, base, PAGES, "02-catalogue")

    page.get_by_role("link", name="CT-CHEST", exact=True).click()
    page.get_by_label("有效期（天）").fill("21")
    check_page(page, base, PAGES, "03-item")
    page.get_by_role("button", name="保存").click()
    page.get_by_text("已保存 CT-CHEST。").wait_for()
    assert next(i for i in svc.items() if i.code == "CT-CHEST").window_days == 21

    page.get_by_role("link", name="未对照的值").click()
    row = page.locator("tr", has_text="TORSO UPPER")
    check_page(page, base, PAGES, "04-unmapped")
    row.get_by_role("combobox").select_option("CHEST")
    row.get_by_role("button", name="对照").click()
    page.get_by_text("已对照为 CHEST。").wait_for()  # the row, swapped in place by htmx
    assert page.url.endswith("/admin/recognition/unmapped")
    assert ("body_part", "TORSO UPPER") not in {(u["field"], u["value"])
                                                for u in svc.unmapped()}

    page.get_by_role("link", name="检查项目编码").click()
    page.get_by_label("医院编码").fill("HIS-0042")
    page.get_by_label("目录项目").select_option("CT-CHEST")
    page.get_by_role("button", name="对照", exact=True).click()
    page.get_by_role("cell", name="HIS-0042", exact=True).wait_for()
    check_page(page, base, PAGES, "05-code-maps")

    page.get_by_role("link", name="变更记录").click()
    page.get_by_text("window_days: 30 → 21").wait_for()
    assert "省卫健委管理员" in page.locator("tbody").inner_text()
    check_page(page, base, PAGES, "06-history")

    page.get_by_role("link", name="统计").click()
    page.get_by_role("heading", name="检查结果互认节省情况").wait_for()
    text = page.locator("main").inner_text()
    assert "病情变化: 1" in text and "呼吸内科" in text
    check_page(page, base, PAGES, "07-figures")
    page.goto(f"{base}/admin/recognition/figures?lang=en")
    page.get_by_role("heading", name="What mutual recognition saved").wait_for()
    check_page(page, base, PAGES, "08-figures-en")
    assert errors == []
