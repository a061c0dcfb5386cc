"""The commission's dashboard in Debian's headless Chromium (Playwright) at 1440x900: the
charts are drawn (ECharts instances with canvases), no console errors, axe-core clean, and
the late-study list links studies only for roles that may open them. Screenshots go to
tests/artifacts/dashboard/ (git-ignored)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from tests.integration.stats.support import World, build_world
from tests.interop.chromium import DESK, base_of, browser, check_axe, open_page, shot  # noqa: F401
from tests.interop.test_dicomweb_client import server_url  # noqa: F401

from cloudfilm.services.container import Services

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

CHARTS = 5


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


@pytest.fixture
def base(world: World, server_url: str) -> str:  # noqa: F811
    return base_of(server_url)


def _desk(chromium: Browser, base: str, token: str, locale: str = "zh-CN"
          ) -> tuple[Any, Page, list[str]]:
    return open_page(chromium, base, token=token, locale=locale, **DESK)


def _check(page: Page, base: str, name: str) -> None:
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    assert page.evaluate("document.body.dataset.charts") == str(CHARTS)
    assert page.locator("[_echarts_instance_]").count() == CHARTS
    assert page.locator("[_echarts_instance_] canvas").count() >= CHARTS
    # A drawn chart has pixels that are not the background.
    drawn = page.evaluate("""() => [...document.querySelectorAll('[data-chart] canvas')]
        .map(c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
                    return n; })""")
    assert all(n > 500 for n in drawn), drawn
    shot(page, "dashboard", name, full_page=True)
    check_axe(page, base, name)


def test_dashboard_draws_its_charts_and_links_only_what_a_role_may_open(
        browser: Browser, base: str, world: World) -> None:  # noqa: F811
    links = "a[href^='/workstation/viewer?study=']"
    context, page, errors = _desk(browser, base, world.tokens["commission"])
    try:
        page.goto(f"{base}/dashboard")
        page.get_by_role("heading", name="影像云监管大屏").wait_for()
        _check(page, base, "01-province-zh")
        assert page.get_by_text("QZ1 医院").count() >= 1  # the silent hospital
        # The link opens the workstation's viewer, a doctor's: the commission's account
        # has none (it would only meet the sign-in page).
        assert page.locator(links).count() == 0
        page.goto(f"{base}/dashboard?days=90&lang=en")
        page.get_by_role("heading", name="Imaging cloud dashboard").wait_for()
        _check(page, base, "02-province-en-90d")
        assert errors == []
    finally:
        context.close()
    context, page, errors = _desk(browser, base, world.tokens["hz-bureau"])
    try:
        page.goto(f"{base}/dashboard")
        _check(page, base, "03-bureau-hangzhou")
        assert page.locator(links).count() == 0  # a bureau sees no patient data
        assert page.get_by_text("NB1 医院").count() == 0  # outside its area
        assert errors == []
    finally:
        context.close()
    context, page, errors = _desk(browser, base, world.tokens["hz1-admin"])
    try:
        page.goto(f"{base}/dashboard")
        _check(page, base, "04-hospital-admin")
        hrefs = page.locator(links).evaluate_all("els => els.map(e => e.getAttribute('href'))")
        assert hrefs and all(h.rsplit("=", 1)[1] != world.other_late_uid for h in hrefs)
        assert errors == []
        # A hospital administrator is a doctor of its hospital: the link opens that study
        # in the workstation's viewer (the policy allowed it, not the sign-in page).
        uid = hrefs[0].rsplit("=", 1)[1]
        with page.expect_navigation():
            page.locator(links).first.click()
        assert page.url.endswith(f"/workstation/viewer?study={uid}")
        assert "/signin" not in page.url
        config = page.locator("script[type='application/json']").first.text_content() or ""
        assert uid in config
    finally:
        context.close()
