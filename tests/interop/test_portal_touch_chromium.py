"""The portal on a touch phone in Chromium (390x844, touch events through the DevTools
protocol): the viewer's gestures (finger drag through slices, brightness/contrast drag,
pinch zoom, double-tap reset, cine play), the family switcher and page, elderly mode,
text at 200 % of the phone's default size at 360 px wide, and every page in English.
axe-core on every page; screenshots under tests/artifacts/portal/."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, CDPSession, Page
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.web.support import Portal
from tests.interop.chromium import browser  # noqa: F401
from tests.interop.test_dicomweb_client import server_url  # noqa: F401
from tests.interop.test_portal_chromium import (
    base,  # noqa: F401
    canvas_pixels,
    check_page,
    phone,  # noqa: F401
    sign_in,
    world,  # noqa: F401
)

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def touch(cdp: CDPSession, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send("Input.dispatchTouchEvent", {
        "type": kind, "touchPoints": [{"x": x, "y": y, "id": i} for i, (x, y) in
                                      enumerate(points)]})


def swipe(cdp: CDPSession, start: list[tuple[float, float]], end: list[tuple[float, float]],
          steps: int = 8) -> None:
    """One or two fingers from ``start`` to ``end``, as a phone's touch screen reports."""
    touch(cdp, "touchStart", start)
    for n in range(1, steps + 1):
        touch(cdp, "touchMove", [(a[0] + (b[0] - a[0]) * n / steps,
                                  a[1] + (b[1] - a[1]) * n / steps) for a, b in zip(start, end,
                                                                                   strict=True)])
    touch(cdp, "touchEnd", [])


def viewer_state(page: Page) -> dict[str, Any]:
    return page.evaluate("() => ({...document.getElementById('view').dataset})")


def test_viewer_gestures_on_a_touch_screen(phone: tuple[Page, list[str]], base: str,  # noqa: F811
                                           world: Portal) -> None:  # noqa: F811
    page, errors = phone
    sign_in(page, base, world)
    page.goto(f"{base}/portal/studies/{world.ct_study}/series/{world.ct_series}/view")
    page.wait_for_function("() => Number(document.getElementById('view').dataset.renders) > 0")
    cdp = page.context.new_cdp_session(page)
    box = page.locator(".stage").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # A finger drags down 60 px: 10 slices on.
    swipe(cdp, [(cx, cy - 100)], [(cx, cy - 40)])
    page.wait_for_function("() => document.getElementById('view').dataset.index === '11'")
    # Pinch out: zoomed; double-tap: back to fit.
    swipe(cdp, [(cx - 30, cy), (cx + 30, cy)], [(cx - 110, cy), (cx + 110, cy)])
    page.wait_for_function("() => Number(document.getElementById('view').dataset.zoom) > 2")
    for _ in range(2):
        touch(cdp, "touchStart", [(cx, cy)])
        touch(cdp, "touchEnd", [])
        page.wait_for_timeout(80)
    page.wait_for_function("() => document.getElementById('view').dataset.zoom === '1'")
    # Brightness/contrast: one finger, up = brighter level... the pixels change.
    page.wait_for_timeout(300)
    before = canvas_pixels(page)
    page.get_by_role("button", name="滑动：调亮度/对比度").click()
    swipe(cdp, [(cx, cy)], [(cx + 80, cy - 120)])
    page.wait_for_function("() => document.getElementById('view').dataset.window !== ''")
    page.wait_for_timeout(500)
    state = viewer_state(page)
    assert state["preset"] == "custom" and state["index"] == "11"
    width, level = (int(v) for v in state["window"].split(","))
    assert (width, level) != (400, 40)
    assert canvas_pixels(page)["sum"] != before["sum"]
    assert f"W {width} L {level}" in page.locator("#overlay").inner_text()
    check_page(page, base, "12-viewer-window-drag")
    # Cine: play advances by itself, pause stops it.
    page.get_by_role("button", name="播放").click()
    page.wait_for_function("() => Number(document.getElementById('view').dataset.index) > 14")
    page.get_by_role("button", name="暂停").click()
    stopped = viewer_state(page)["index"]
    page.wait_for_timeout(500)
    assert viewer_state(page)["index"] == stopped
    assert errors == []


def test_family_switcher_family_page_and_elderly_mode(phone: tuple[Page, list[str]],  # noqa: F811
                                                      base: str, world: Portal) -> None:  # noqa: F811
    page, errors = phone
    sign_in(page, base, world)
    assert page.locator("a.study").count() == 4
    page.get_by_label("查看谁的资料").select_option(str(world.province.r2))
    page.wait_for_url("**/portal?for=*")
    assert page.locator("a.study").count() == 1  # only R2's study
    check_page(page, base, "13-family-switched")
    page.get_by_role("link", name="家人", exact=True).click()
    page.get_by_role("heading", name="添加家人").wait_for()
    check_page(page, base, "14-family")
    page.get_by_label("家人姓名（与身份证一致）").fill("李四")
    page.get_by_label("家人身份证号").fill("12345")
    page.get_by_role("button", name="给家人发送验证码").click()
    page.get_by_text("请检查姓名和18位身份证号").wait_for()
    check_page(page, base, "15-family-error")
    errors.remove("Failed to load resource: the server responded with a status of 400 "
                  "(Bad Request)")  # the refused form's own status
    # Elderly mode: large type, big targets, remembered.
    page.goto(f"{base}/portal?for=0")  # everyone again
    normal = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    page.get_by_role("button", name="大字模式").click()
    page.get_by_role("button", name="标准字体").wait_for()
    big = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert big >= 24 and big > normal  # >= 18 pt
    smallest = page.evaluate("""() => Math.min(...[...document.querySelectorAll(
        'main button, main a.button, main select, nav a')].filter(e => e.offsetParent)
        .map(e => e.getBoundingClientRect().height))""")
    assert smallest >= 48
    check_page(page, base, "16-elderly-timeline")
    page.locator("a.study").first.click()
    page.get_by_role("heading", name="报告").wait_for()
    check_page(page, base, "17-elderly-study")
    assert errors == []


PAGES = ("/portal", "/portal/studies/{study}", "/portal/studies/{study}/series/{series}/view",
         "/portal/access", "/portal/log", "/portal/shares", "/portal/family")


NAMES = ("timeline", "study", "viewer", "requests", "who-looked", "shares", "family")


def test_text_at_200_percent_on_a_360_px_phone(browser: Browser, base: str,  # noqa: F811
                                               world: Portal) -> None:  # noqa: F811
    context = browser.new_context(locale="zh-CN", viewport={"width": 360, "height": 740},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        # The phone's text size at 200 %: the browser's default font 16 -> 32 px.
        cdp = context.new_cdp_session(page)
        cdp.send("Page.enable")
        cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 32, "fixed": 26}})
        sign_in(page, base, world)
        size = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
        assert size >= 32, size
        for n, path in enumerate(PAGES):
            page.goto(base + path.format(study=world.ct_study, series=world.ct_series))
            # The preference is the renderer's: said again after each navigation.
            cdp.send("Page.setFontSizes", {"fontSizes": {"standard": 32, "fixed": 26}})
            page.wait_for_function(
                "() => parseFloat(getComputedStyle(document.body).fontSize) >= 32")
            page.wait_for_timeout(100)
            # Every control still fits the width: nothing needs a sideways scroll.
            wide = page.evaluate("""() => [...document.querySelectorAll(
                'button, a, input, select, label, h1, h2, p')].filter(e => e.offsetParent
                && e.getBoundingClientRect().right > window.innerWidth + 1)
                .map(e => e.outerHTML.slice(0, 80))""")
            assert wide == [], (path, wide)
            check_page(page, base, f"font200-{n:02d}-{NAMES[n]}", full_page=False)
    finally:
        context.close()


def test_every_page_in_english(phone: tuple[Page, list[str]], base: str,  # noqa: F811
                               world: Portal) -> None:  # noqa: F811
    page, errors = phone
    page.goto(f"{base}/portal/signin?lang=en")
    page.get_by_role("heading", name="Sign in with your phone").wait_for()
    check_page(page, base, "en-01-signin")
    sign_in_en(page, base, world)
    for n, (path, name) in enumerate(zip(PAGES, NAMES, strict=True), start=2):
        page.goto(base + path.format(study=world.ct_study, series=world.ct_series))
        assert page.locator("html").get_attribute("lang") == "en"
        check_page(page, base, f"en-{n:02d}-{name}")
    assert errors == []


def sign_in_en(page: Page, base: str, world: Portal) -> None:  # noqa: F811
    from tests.integration.web.support import PHONE1, latest_code

    page.get_by_label("Mobile number").fill(PHONE1)
    page.get_by_role("button", name="Send code").click()
    page.get_by_label("6-digit code").fill(latest_code(world.province.services, PHONE1))
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(f"{base}/portal")


def test_register_rate_limit_error_pin_pages_and_saving_an_image(
        phone: tuple[Page, list[str]], base: str, world: Portal,  # noqa: F811
        browser: Browser) -> None:  # noqa: F811
    from tests.integration.web.support import latest_code

    page, errors = phone
    services = world.province.services
    newcomer = "13700137000"
    page.goto(f"{base}/portal/signin")
    page.get_by_label("手机号码").fill(newcomer)
    page.get_by_role("button", name="获取验证码").click()
    page.get_by_label("6位验证码").fill(latest_code(services, newcomer))
    page.get_by_role("button", name="登录", exact=True).click()
    page.get_by_role("button", name="注册并登录").wait_for()
    assert page.get_by_text("该手机号还没有账户").is_visible()
    check_page(page, base, "18-register")
    # Codes for this phone until the limit: the wait is said in seconds.
    for _ in range(6):
        page.goto(f"{base}/portal/signin")
        page.get_by_label("手机号码").fill(newcomer)
        page.get_by_role("button", name="获取验证码").click()
        page.wait_for_load_state()
        if page.get_by_text("操作太频繁").count():
            break
    assert page.get_by_text("分钟后再试").is_visible()
    check_page(page, base, "19-rate-limited")
    # Someone else's study: the error page, in plain words.
    sign_in(page, base, world)
    page.goto(f"{base}/portal/studies/1.2.3.4.5")
    assert page.get_by_role("alert").is_visible()
    check_page(page, base, "20-error")
    # Save the slice shown as a JPEG, from the viewer.
    page.goto(f"{base}/portal/studies/{world.ct_study}/series/{world.ct_series}/view?start=5")
    page.wait_for_function("() => document.getElementById('view').dataset.index === '5'")
    with page.expect_download() as download:
        page.get_by_role("link", name="保存这张图片（JPEG）").click()
    with open(download.value.path(), "rb") as fh:
        assert fh.read(2) == b"\xff\xd8"
    # A share link with a PIN: the doctor's PIN page, a wrong PIN, then the images.
    page.goto(f"{base}/portal/studies/{world.ct_study}")
    page.get_by_label("4位密码（可不填）").fill("2468")
    page.get_by_role("button", name="生成链接").click()
    url = page.locator("#share-url").input_value()
    other = browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844},
                                is_mobile=True, has_touch=True)
    try:
        doctor = other.new_page()
        doctor.goto(url)
        check_page(doctor, base, "21-share-pin")
        doctor.get_by_label("患者告诉您的4位密码").fill("1111")
        doctor.get_by_role("button", name="打开").click()
        doctor.get_by_text("密码不对").wait_for()
        doctor.get_by_label("患者告诉您的4位密码").fill("2468")
        doctor.get_by_role("button", name="打开").click()
        doctor.wait_for_function(
            "() => Number(document.getElementById('view').dataset.renders) > 0")
        assert doctor.locator("#save-image").count() == 0  # view only
    finally:
        other.close()
    # The refusals' own statuses (429, 403) are console errors of the pages themselves.
    assert all("status of 4" in e for e in errors), errors
