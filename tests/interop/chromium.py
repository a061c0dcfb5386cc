"""What every Chromium test of the pages shares: Debian's headless Chromium under Playwright
(one browser a test module), a live server for module-wide worlds, contexts signed in with a
session cookie, the staff sign-in form, console-error capture, screenshots and the axe-core
check (no serious or critical violations).

Screenshots go to ``tests/artifacts/<page>/`` (git-ignored)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from tests.conftest import IN_CI
from tests.integration.web.support import latest_code

from cloudfilm.interfaces.api.http import create_app
from cloudfilm.interfaces.web.assets import Assets
from cloudfilm.interfaces.web.security import SESSION_COOKIE
from cloudfilm.services.container import Services

CHROMIUM = "/usr/bin/chromium"
# As the workplace's probe starts it: no sandbox as root, nothing that phones home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
# The diagnostic viewer draws with WebGL: SwiftShader instead of a GPU.
WEBGL_ARGS = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + [
    "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DESK = {"viewport": {"width": 1440, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3,
         "is_mobile": True, "has_touch": True}


@contextmanager
def chromium(args: list[str] | None = None) -> Iterator[Browser]:
    """Debian's chromium; skipped where it is not installed (required in CI)."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=args or CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One browser a test module (starting one costs about a second)."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def webgl_browser() -> Iterator[Browser]:
    with chromium(WEBGL_ARGS) as launched:
        yield launched


def require_assets() -> None:
    if not Assets().built:
        pytest.fail("the web assets are not built: run `make install` (npm ci && npm run "
                    "build in web/)")


def base_of(server_url: str) -> str:
    """The site root of the ``server_url`` fixture (which ends in ``/dicomweb``)."""
    require_assets()
    return server_url.rsplit("/", 1)[0]


@contextmanager
def live_server(services: Services) -> Iterator[str]:
    """The whole app on a free loopback port, in a thread; yields the site root."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the HTTP server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def watch(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of ``page``, as they come."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def open_page(browser: Browser, base: str, *, token: str = "", locale: str = "zh-CN",
              **options: Any) -> tuple[BrowserContext, Page, list[str]]:
    """A new context (signed in with ``token`` as the session cookie, if given), its page
    and the page's console errors. Close the context when done."""
    context = browser.new_context(locale=locale, **(options or DESK))
    if token:
        context.add_cookies([{"name": SESSION_COOKIE, "value": token, "url": base}])
    page = context.new_page()
    return context, page, watch(page)


@contextmanager
def page_of(browser: Browser, base: str, *, token: str = "", locale: str = "zh-CN",
            **options: Any) -> Iterator[tuple[Page, list[str]]]:
    context, page, errors = open_page(browser, base, token=token, locale=locale, **options)
    try:
        yield page, errors
    finally:
        context.close()


def staff_sign_in(page: Page, base: str, user: str, password: str, *,
                  landing: str = "/workstation") -> None:
    """The staff sign-in form (``/workstation/signin``), as a doctor types it."""
    if "/workstation/signin" not in page.url:
        page.goto(f"{base}/workstation/signin")
    page.get_by_label("用户名").fill(user)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url(f"{base}{landing}")


def portal_sign_in(page: Page, base: str, services: Services, phone: str, *,
                   check: Callable[[str], None] | None = None) -> None:
    """The resident's portal sign-in: the phone number, the code read from the SMS outbox
    (``check(name)`` at the form and at the code, for screenshots and axe-core)."""
    page.goto(f"{base}/portal")
    assert page.url.endswith("/portal/signin")
    if check:
        check("01-signin")
    page.get_by_label("手机号码").fill(phone)
    page.get_by_role("button", name="获取验证码").click()
    page.get_by_text("验证码已发送到").wait_for()
    page.get_by_label("6位验证码").fill(latest_code(services, phone))
    if check:
        check("02-code")
    page.get_by_role("button", name="登录", exact=True).click()
    page.wait_for_url(f"{base}/portal")


def shot(page: Page, folder: str, name: str, *, full_page: bool = False) -> Image.Image:
    """A screenshot saved as tests/artifacts/<folder>/<name>.png, returned in grey."""
    (ARTIFACTS / folder).mkdir(parents=True, exist_ok=True)
    data = page.screenshot(path=str(ARTIFACTS / folder / f"{name}.png"), full_page=full_page)
    return Image.open(io.BytesIO(data)).convert("L")


def check_axe(page: Page, base: str, name: str = "") -> None:
    """axe-core (from the npm build): no serious or critical violations."""
    page.add_script_tag(url=f"{base}{Assets().script('axe')}", type="module")
    page.wait_for_function("() => window.axe !== undefined")
    violations: list[dict[str, Any]] = page.evaluate(
        """async () => (await window.axe.run(document, {resultTypes: ['violations']}))
           .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                  nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))""")
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == [], (name, bad)


def check_page(page: Page, base: str, folder: str, name: str, *,
               full_page: bool = True) -> None:
    """A screenshot, no sideways scrolling, axe-core clean (``full_page=False``: the screen
    only; a full-page capture re-lays the page out and loses a text size set through the
    DevTools protocol)."""
    shot(page, folder, name, full_page=full_page)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
    check_axe(page, base, name)


__all__ = ["ARTIFACTS", "CHROMIUM", "CHROMIUM_ARGS", "DESK", "PHONE", "WEBGL_ARGS", "base_of",
           "browser", "check_axe", "check_page", "chromium", "live_server", "open_page",
           "page_of", "portal_sign_in", "require_assets", "shot", "staff_sign_in", "watch",
           "webgl_browser"]
