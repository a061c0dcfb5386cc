"""An amended report on the study page: the banner, the version history, an earlier version
opened from it (HTML and PDF), each through the policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from tests.integration.access.conftest import Province, province  # noqa: F401
from tests.integration.reports.support import fhir_report
from tests.integration.web.support import Portal, build
from tests.integration.web.test_portal import sign_in

from cloudfilm.interfaces.api.http import create_app


@pytest.fixture
def world(province: Province, tmp_path: Path) -> Portal:  # noqa: F811
    portal = build(province, tmp_path, slices=2)
    province.services.reports.receive_fhir(orjson.dumps(fhir_report(
        key="PORTAL", study_uid=portal.ct_study, status="amended",
        impression="右肺上叶结节，考虑炎性。", issued="2025-03-12T09:00:00+08:00")),
        actor=province.hospital("HB"))
    return portal


@pytest.fixture
def browser(world: Portal) -> Iterator[TestClient]:
    with TestClient(create_app(world.province.services), follow_redirects=False,
                    headers={"user-agent": "Mozilla/5.0 (Linux; Android 10) Mobile"}) as client:
        yield client


def test_amended_banner_history_and_an_earlier_version(browser: TestClient,
                                                       world: Portal) -> None:
    sign_in(browser, world)
    page = browser.get(f"/portal/studies/{world.ct_study}").text
    assert "本报告已修订" in page
    assert 'id="report-history"' in page and "第1版" in page and "第2版" in page
    assert "考虑炎性" in page
    first = browser.get(f"/portal/reports/{world.report_id}?version=1")
    assert first.status_code == 200 and "考虑炎性" not in first.text
    assert f"/portal/reports/{world.report_id}/pdf?version=1" in first.text
    pdf = browser.get(f"/portal/reports/{world.report_id}/pdf?version=1")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert browser.get(f"/portal/reports/{world.report_id}?version=9").status_code == 404
