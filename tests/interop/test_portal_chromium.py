"""The resident's portal in a real phone browser: Debian's headless Chromium (Playwright) at
390x844 with touch. Sign-in through the SMS outbox, the timeline of studies at two
hospitals, the viewer scrolled to a slice with a non-blank canvas, a window preset that
changes the pixels, approving a doctor's request; axe-core (from the npm build) on every
page. Screenshots are saved under tests/artifacts/portal/ (git-ignored)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from pydicom import dcmread
from pydicom.fileset import FileSet
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.support import PHONE1, Portal, build, request_access
from tests.interop.chromium import PHONE, base_of, browser, page_of, portal_sign_in  # noqa: F401
from tests.interop.chromium import check_page as check
from tests.interop.test_dicomweb_client import server_url  # noqa: F401

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

PAGES = "portal"
SLICES = 60


@pytest.fixture
def world(province: Province, tmp_path: Path) -> Portal:  # noqa: F811
    return build(province, tmp_path, slices=SLICES)


@pytest.fixture
def base(world: Portal, server_url: str) -> str:  # noqa: F811
    return base_of(server_url)


@pytest.fixture
def phone(browser: Browser) -> Iterator[tuple[Page, list[str]]]:  # noqa: F811
    with page_of(browser, "", accept_downloads=True, **PHONE) as opened:
        yield opened


def check_page(page: Page, base: str, name: str, *, full_page: bool = True) -> None:
    check(page, base, PAGES, name, full_page=full_page)


def sign_in(page: Page, base: str, world: Portal) -> None:
    portal_sign_in(page, base, world.province.services, PHONE1,
                   check=lambda name: check_page(page, base, name))


def canvas_pixels(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => {
        const c = document.getElementById('view');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let lit = 0, sum = 0, hash = 0;
        for (let i = 0; i < d.length; i += 4) {
            if (d[i] > 8) lit += 1;
            sum += d[i];
            hash = (hash * 31 + d[i]) >>> 0;
        }
        return {lit: lit / (d.length / 4), sum, hash, renders: Number(c.dataset.renders || 0),
                index: Number(c.dataset.index || 0)};
    }""")


def test_sign_in_timeline_study_and_viewer(phone: tuple[Page, list[str]], base: str,
                                           world: Portal) -> None:
    page, errors = phone
    sign_in(page, base, world)
    cards = page.locator("a.study")
    assert cards.count() == 4  # R1: HA and HB (two); R2, whom R1 is guardian of: one
    text = page.locator("#studies").inner_text()
    assert "Hospital HA" in text and "Hospital HB" in text and "胸部CT" in text
    assert cards.first.inner_text().startswith("胸部CT")  # 2025 before 2024
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth)")
    check_page(page, base, "03-timeline")

    cards.first.click()
    page.get_by_role("heading", name="报告").wait_for()
    assert page.get_by_text("检查所见").is_visible()
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth)")
    check_page(page, base, "04-study")
    with page.expect_download() as download:
        page.get_by_role("link", name="下载 PDF").click()
    assert Path(download.value.path()).read_bytes().startswith(b"%PDF")

    page.get_by_role("link", name="查看", exact=True).first.click()
    page.wait_for_function("() => Number(document.getElementById('view').dataset.renders) > 0")
    first = canvas_pixels(page)
    assert first["index"] == 1 and first["lit"] > 0.10
    # The slider to slice 37 of 60.
    page.locator("#slice").fill("37")
    page.wait_for_function("() => document.getElementById('view').dataset.index === '37'")
    page.wait_for_function(f"() => Number(document.getElementById('view').dataset.renders) > "
                           f"{first['renders']}")
    at37 = canvas_pixels(page)
    assert at37["lit"] > 0.10 and at37["hash"] != first["hash"]  # the marker moved
    assert "37 / 60" in page.locator("#overlay").inner_text()
    # A drag down the image scrolls further (6 CSS px a slice).
    box = page.locator(".stage").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + 40
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x, y + 60, steps=6)
    page.mouse.up()
    page.wait_for_function("() => document.getElementById('view').dataset.index === '47'")
    page.wait_for_timeout(300)
    before = canvas_pixels(page)
    # The lung window: same slice, different pixels.
    page.get_by_role("button", name="肺窗").click()
    page.wait_for_function(f"() => Number(document.getElementById('view').dataset.renders) > "
                           f"{before['renders']} && document.getElementById('view')"
                           ".dataset.preset === 'lung'")
    lung = canvas_pixels(page)
    assert lung["index"] == 47 and lung["sum"] != before["sum"] and lung["lit"] > 0.10
    assert "W 1500 L -600" in page.locator("#overlay").inner_text()
    check_page(page, base, "05-viewer")
    assert errors == []


def test_approve_a_request_then_see_who_looked(phone: tuple[Page, list[str]], base: str,
                                              world: Portal) -> None:
    page, errors = phone
    p = world.province
    request_access(p)
    sign_in(page, base, world)
    page.get_by_role("link", name="授权").click()
    page.get_by_text("复诊对比").wait_for()
    check_page(page, base, "06-requests")
    page.get_by_role("button", name="同意").click()
    page.get_by_role("button", name="撤销授权").wait_for()
    check_page(page, base, "07-granted")
    p.services.retrieve.metadata(p.sb1, actor=p.doctor)  # the doctor opens the study
    page.get_by_role("link", name="查看记录").click()
    page.get_by_text("Dr 1").first.wait_for()
    assert "Hospital HA" in page.locator("main").inner_text()
    check_page(page, base, "08-who-looked")
    assert errors == []


def test_download_the_study_and_share_it_with_a_doctor(
        phone: tuple[Page, list[str]], base: str, world: Portal,
        browser: Browser) -> None:  # noqa: F811
    page, errors = phone
    sign_in(page, base, world)
    page.goto(f"{base}/portal/studies/{world.ct_study}")
    dicom = page.locator("#download-dicom")
    assert "DICOM" in dicom.inner_text() and "KB" in dicom.inner_text()  # size shown first
    with page.expect_download() as download:
        dicom.click()
    with zipfile.ZipFile(download.value.path()) as archive:
        names = archive.namelist()
        assert names[0] == "DICOMDIR" and len(names) == SLICES + 1
        # A media set another PACS imports: pydicom reads the DICOMDIR and finds every image.
        folder = Path(download.value.path()).parent / "media"
        archive.extractall(folder)
    media = FileSet(dcmread(folder / "DICOMDIR"))
    assert len(media) == SLICES
    assert {str(i.SOPInstanceUID) for i in media} == {
        str(dcmread(i.path).SOPInstanceUID) for i in media}
    page.get_by_label("有效期").select_option("1")
    page.get_by_role("button", name="生成链接").click()
    page.locator("#share-result svg").wait_for()
    check_page(page, base, "09-share-link")
    url = page.locator("#share-url").input_value()
    # The doctor: another browser, no account, no session.
    other = browser.new_context(locale="zh-CN", **PHONE)
    try:
        doctor = other.new_page()
        doctor.goto(url)
        doctor.wait_for_function(
            "() => Number(document.getElementById('view').dataset.renders) > 0")
        assert doctor.get_by_text("只能查看").is_visible()
        check_page(doctor, base, "10-shared-viewer")
        page.goto(f"{base}/portal/log")
        page.get_by_text("持您分享链接的医生").first.wait_for()
        page.goto(f"{base}/portal/shares")
        check_page(page, base, "11-my-shares")
        page.get_by_role("button", name="停止分享").click()
        page.get_by_text("已失效").wait_for()
        answer = doctor.goto(url)
        assert answer is not None and answer.status == 404
    finally:
        other.close()
    assert errors == []
