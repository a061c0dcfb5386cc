"""The report page in a real browser: Debian's headless Chromium driven by Playwright, on a
phone-sized screen, in Chinese and in English, with the PDF download."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Browser
from tests.factories import make_ct, to_bytes
from tests.integration.reports.support import fhir_report
from tests.interop.chromium import PHONE, browser  # noqa: F401
from tests.interop.test_dicomweb_client import server_url  # noqa: F401

from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.archive.ingest import IngestItem, Sender
from cloudfilm.services.container import Services

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@pytest.fixture
def report_url(services: Services, server_url: str, tmp_path: Path) -> str:  # noqa: F811
    ct = make_ct()
    path = tmp_path / "ct.dcm"
    path.write_bytes(to_bytes(ct))
    [stored] = services.ingest.ingest_files([IngestItem(path)], sender=Sender())
    assert not isinstance(stored, Exception)
    study = str(ct.StudyInstanceUID)
    first = services.reports.receive_fhir(orjson.dumps(fhir_report(key="WEB", study_uid=study)),
                                          actor=LOCAL_OPERATOR)
    services.reports.receive_fhir(orjson.dumps(fhir_report(
        key="WEB", study_uid=study, status="amended", impression="右肺上叶结节，考虑炎性。",
        issued="2024-01-06T09:00:00+08:00")), actor=LOCAL_OPERATOR)
    base = server_url.rsplit("/", 1)[0]
    return f"{base}/api/v1/reports/{first.report_id}/html"


def test_report_page_on_a_phone_in_chinese_with_pdf_download(browser: Browser,  # noqa: F811
                                                             report_url: str) -> None:
    context = browser.new_context(locale="zh-CN", accept_downloads=True, **PHONE)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = page.goto(report_url)
    assert response is not None and response.status == 200
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert page.get_by_text("本报告已修订").first.is_visible()
    assert page.get_by_text("右肺上叶结节，考虑炎性。").first.is_visible()
    assert page.get_by_text("磨玻璃结节", exact=False).first.is_visible()
    # Nothing wider than the phone: no sideways scrolling to read a report.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # The version history names both versions.
    history = page.locator("table").last.inner_text()
    assert "1" in history and "2" in history
    with page.expect_download() as download:
        page.get_by_text("下载 PDF").first.click()
    saved = Path(download.value.path())
    assert saved.read_bytes().startswith(b"%PDF")
    assert download.value.suggested_filename.endswith(".pdf")
    assert errors == []
    context.close()


def test_report_page_follows_the_browsers_language(browser: Browser,  # noqa: F811
                                                  report_url: str) -> None:
    context = browser.new_context(locale="en-US", **PHONE)
    page = context.new_page()
    page.goto(report_url)
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.get_by_text("Impression").first.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    context.close()
