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
from tests.integration.web.support import PHONE1, Portal, build, latest_code, request_access
from tests.interop.test_dicomweb_client import server_url  # noqa: F401
from tests.interop.test_report_page_chromium import PHONE, browser  # noqa: F401

from cloudfilm.interfaces.web.assets import Assets

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "portal"
SLICES = 60


@pytest.fixture
def world(province: Province, tmp_path: Path) -> Portal:  # noqa: F811
    return build(province, tmp_path, slices=SLICES)


@pytest.fixture
def base(world: Portal, server_url: str) -> str:  # noqa: F811
    if not Assets().built:
        pytest.fail("the web assets are not built: run `make install` (npm ci && npm run "
                    "build in web/)")
    return server_url.rsplit("/", 1)[0]


@pytest.fixture
def phone(browser: Browser) -> Iterator[tuple[Page, list[str]]]:  # noqa: F811
    context = browser.new_context(locale="zh-CN", accept_downloads=True, **PHONE)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page, errors
    context.close()


def check_page(page: Page, base: str, name: str, *, full_page: bool = True) -> None:
    """No sideways scrolling, no serious or critical axe-core violations; a screenshot
    (``full_page=False``: the screen only; a full-page capture re-lays the page out and
    loses a text size set through the DevTools protocol)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
    axe = Assets().script("axe")
    page.add_script_tag(url=f"{base}{axe}", type="module")
    page.wait_for_function("() => window.axe !== undefined")
    violations: list[dict[str, Any]] = page.evaluate(
        """async () => (await window.axe.run(document, {resultTypes: ['violations']}))
           .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                  nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))""")
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == [], (name, bad)


def sign_in(page: Page, base: str, world: Portal) -> None:
    page.goto(f"{base}/portal")
    assert page.url.endswith("/portal/signin")
    check_page(page, base, "01-signin")
    page.get_by_label("手机号码").fill(PHONE1)
    page.get_by_role("button", name="获取验证码").click()
    page.get_by_text("验证码已发送到").wait_for()
    page.get_by_label("6位验证码").fill(latest_code(world.province.services, PHONE1))
    check_page(page, base, "02-code")
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url(f"{base}/portal")


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
