"""Who sees what on the dashboard, exports, the audit of reads, /metrics, on both databases."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from starlette.testclient import TestClient
from tests.integration.stats.support import World, build_world

from cloudfilm.infrastructure.db.models import AuditEvent
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.container import Services


@pytest.fixture
def world(services: Services) -> World:
    return build_world(services)


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    # Not a local client: every request must bring its own credentials.
    with TestClient(create_app(services), client=("10.1.2.3", 4000)) as client:
        yield client


def _get(api: TestClient, world: World, who: str, path: str) -> object:
    return api.get(path, headers={"authorization": f"Bearer {world.tokens[who]}"})


def _codes(api: TestClient, world: World, who: str) -> set[str]:
    r = _get(api, world, who, "/api/v1/stats/timeliness")
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    return {row[0] for row in r.json()["rows"]}  # type: ignore[attr-defined]


def test_each_role_sees_its_scope(api: TestClient, world: World) -> None:
    assert _codes(api, world, "commission") == {"HZ1", "HZ2", "NB1"}
    assert _codes(api, world, "hz-bureau") == {"HZ1", "HZ2"}
    assert _codes(api, world, "hz1-admin") == {"HZ1"}
    r = _get(api, world, "hz1-doctor", "/api/v1/stats/timeliness")
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert api.get("/api/v1/stats/headline").status_code == 401
    # The bureau's silent list and late list stay in its area.
    silent = _get(api, world, "commission", "/api/v1/stats/silent").json()  # type: ignore[attr-defined]
    assert [r[0] for r in silent["rows"]] == ["QZ1"]
    bureau_late = _get(api, world, "hz-bureau", "/api/v1/stats/late?days=7").json()  # type: ignore[attr-defined]
    assert {r[2] for r in bureau_late["rows"]} == {"HZ1"}
    assert not any(r[-1] for r in bureau_late["rows"])  # no links for the bureau
    admin_late = _get(api, world, "hz1-admin", "/api/v1/stats/late?days=7").json()  # type: ignore[attr-defined]
    assert admin_late["rows"] and all(r[-1] for r in admin_late["rows"])
    head = dict(_get(api, world, "hz1-admin", "/api/v1/stats/headline").json()["rows"])  # type: ignore[attr-defined]
    assert head["on_time_share_period"] == 0.0
    assert head["province_on_time_share_period"] == pytest.approx(20 / 45, abs=1e-3)


def test_headline_coverage_and_ranking(api: TestClient, world: World) -> None:
    head = dict(_get(api, world, "commission", "/api/v1/stats/headline").json()["rows"])  # type: ignore[attr-defined]
    assert head["hospitals_registered"] == 4
    assert head["hospitals_connected"] == 3
    assert head["public_hospitals"] == 3 and head["public_connected_share"] == 1.0
    assert head["studies_period"] == 45
    assert head["late_studies_period"] == 25
    ranking = _get(api, world, "commission", "/api/v1/stats/timeliness").json()  # type: ignore[attr-defined]
    assert [r[0] for r in ranking["rows"]] == ["HZ1", "NB1", "HZ2"]  # worst first


def test_csv_and_xlsx_hold_the_same_rows(api: TestClient, world: World) -> None:
    as_json = _get(api, world, "commission", "/api/v1/stats/timeliness").json()  # type: ignore[attr-defined]
    r = _get(api, world, "commission", "/api/v1/stats/timeliness?format=csv")
    assert r.headers["content-type"].startswith("text/csv")  # type: ignore[attr-defined]
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))  # type: ignore[attr-defined]
    assert rows[0] == as_json["columns"]
    assert [row[:6] for row in rows[1:]] == [[str(v) for v in row[:6]]
                                            for row in as_json["rows"]]
    assert "Patient" not in r.text and "patient" not in rows[0]  # type: ignore[attr-defined]
    r = _get(api, world, "commission", "/api/v1/stats?format=xlsx")
    book = load_workbook(io.BytesIO(r.content))  # type: ignore[attr-defined]
    assert "timeliness" in book.sheetnames and "late" in book.sheetnames
    sheet = [list(row) for row in book["timeliness"].iter_rows(values_only=True)]
    assert sheet[0] == as_json["columns"]
    assert [row[:6] for row in sheet[1:]] == [row[:6] for row in as_json["rows"]]


def test_every_read_is_audited(api: TestClient, world: World, services: Services) -> None:
    _get(api, world, "hz-bureau", "/api/v1/stats/coverage")
    _get(api, world, "hz1-doctor", "/api/v1/stats/coverage")
    with services.health._db.reading() as conn:
        rows = conn.execute(select(AuditEvent.action, AuditEvent.outcome, AuditEvent.reason,
                                   AuditEvent.resident_id)
                            .where(AuditEvent.action == "stats.read")).all()
    assert ("stats.read", "allowed", "area", None) in rows
    assert ("stats.read", "denied", "not-permitted", None) in rows


def test_admin_account_lists_hospitals_and_reads_metrics(api: TestClient,
                                                         world: World) -> None:
    r = _get(api, world, "commission", "/api/v1/hospitals")
    assert r.status_code == 200 and len(r.json()) == 4  # type: ignore[attr-defined]
    api.cookies.set("cloudfilm_session", world.tokens["commission"])
    assert api.get("/api/v1/hospitals").status_code == 200
    metrics = api.get("/metrics").text
    assert "cloudfilm_hospitals_connected 3.0" in metrics
    assert "cloudfilm_studies_late_today" in metrics


def test_the_page_renders_for_each_role(api: TestClient, world: World) -> None:
    assert api.get("/dashboard", follow_redirects=False).headers["location"].startswith(
        "/workstation/signin")
    api.cookies.set("cloudfilm_session", world.tokens["hz-bureau"])
    page = api.get("/dashboard?lang=zh-CN")
    assert page.status_code == 200
    assert "影像云监管大屏" in page.text and "HZ1 医院" in page.text
    assert "NB1 医院" not in page.text
    assert "/workstation/viewer?study=" not in page.text
    api.cookies.set("cloudfilm_session", world.tokens["commission"])
    page = api.get("/dashboard?days=7&lang=en")
    # The viewer is a doctor's: the commission's account sees the UIDs, unlinked.
    assert 'class="uid">1.2.' in page.text and "/workstation/viewer?study=" not in page.text
    assert "QZ1 医院" in page.text  # silent
